//! HubSpot webhook deliveries (R6): checking a delivery's v3 signature and
//! age, refusing one seen before, and reading which portals its events name.
//!
//! HubSpot signs `method + URI + body + timestamp` with the app's client
//! secret (HMAC-SHA256, base64) and sends the result in
//! `X-HubSpot-Signature-v3` and the timestamp (unix ms) in
//! `X-HubSpot-Request-Timestamp`. The URI is the one HubSpot called — the
//! console's public URL, not the address it listens on — with a few
//! percent-encoded characters decoded, as HubSpot's documentation lists.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A delivery older (or further ahead) than this is refused: HubSpot's
/// documented window, and how long a replayed signature is remembered.
pub const MAX_AGE_MS: i64 = 5 * 60 * 1000;

/// At most this many signatures are remembered for replay checks; a
/// delivery beyond them (only a holder of the secret can make so many) is
/// refused rather than letting memory grow.
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a delivery was refused (each is answered 401 but for `Malformed`, 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A header HubSpot always sends is missing.
    MissingHeader(&'static str),
    /// The timestamp is not a unix time in milliseconds.
    BadTimestamp,
    /// The timestamp is more than five minutes from now.
    Stale,
    /// The signature does not match the delivery.
    BadSignature,
    /// This very delivery (its signature) was accepted before.
    Replayed,
    /// The body is not the JSON array of events HubSpot sends.
    Malformed(String),
}

impl Refusal {
    /// The label of the refusal in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::MissingHeader(_) => "missing_header",
            Refusal::BadTimestamp => "bad_timestamp",
            Refusal::Stale => "stale",
            Refusal::BadSignature => "bad_signature",
            Refusal::Replayed => "replayed",
            Refusal::Malformed(_) => "malformed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::MissingHeader(name) => write!(f, "the {name} header is missing"),
            Refusal::BadTimestamp => {
                f.write_str("X-HubSpot-Request-Timestamp is not a unix time in milliseconds")
            }
            Refusal::Stale => f.write_str("the delivery is more than five minutes old"),
            Refusal::BadSignature => f.write_str(
                "X-HubSpot-Signature-v3 does not match: check the client secret and the public URL",
            ),
            Refusal::Replayed => f.write_str("this delivery was received before"),
            Refusal::Malformed(why) => write!(f, "not a HubSpot webhook delivery: {why}"),
        }
    }
}

/// The URI HubSpot signed: the public URL (scheme, host, any path prefix)
/// and the request's path and query, with the characters HubSpot's
/// documentation names decoded.
pub fn signed_uri(public_url: &str, path_and_query: &str) -> String {
    let raw = format!("{}{path_and_query}", public_url.trim_end_matches('/'));
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3);
        match code.and_then(|code| {
            DECODED
                .iter()
                .find(|(hex, _)| hex.eq_ignore_ascii_case(code))
        }) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mac(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// The v3 signature of a delivery, as HubSpot computes it.
pub fn signature(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    BASE64.encode(
        mac(secret, method, uri, body, timestamp)
            .finalize()
            .into_bytes(),
    )
}

/// A delivery's signing headers, as received.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
}

/// Checks a delivery's age and signature (in constant time) at `now_ms`.
pub fn verify(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    signed: Signed<'_>,
    now_ms: i64,
) -> Result<(), Refusal> {
    let timestamp = signed
        .timestamp
        .ok_or(Refusal::MissingHeader("X-HubSpot-Request-Timestamp"))?;
    let signature = signed
        .signature
        .ok_or(Refusal::MissingHeader("X-HubSpot-Signature-v3"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::BadTimestamp)?;
    if now_ms.abs_diff(at) > MAX_AGE_MS as u64 {
        return Err(Refusal::Stale);
    }
    let given = BASE64
        .decode(signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    mac(secret, method, uri, body, timestamp)
        .verify_slice(&given)
        .map_err(|_| Refusal::BadSignature)
}

/// The signatures of deliveries accepted in the last [`MAX_AGE_MS`]: a
/// delivery sent again byte for byte (HubSpot's own retries are signed
/// anew) is a replay.
#[derive(Debug, Default)]
pub struct Replays {
    seen: HashMap<String, i64>,
}

impl Replays {
    /// Remembers `signature` (checked, of a delivery stamped `at_ms`);
    /// refuses one already remembered.
    pub fn admit(&mut self, signature: &str, at_ms: i64, now_ms: i64) -> Result<(), Refusal> {
        if self.seen.len() >= MAX_REMEMBERED / 2 {
            self.seen
                .retain(|_, at| now_ms.abs_diff(*at) <= MAX_AGE_MS as u64);
        }
        if self.seen.contains_key(signature) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Refusal::Replayed);
        }
        self.seen.insert(signature.to_owned(), at_ms);
        Ok(())
    }
}

/// One event of a delivery; HubSpot adds fields over time, so every field
/// is optional and unknown ones are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    portal_id: Option<serde_json::Value>,
    subscription_type: Option<String>,
}

/// The portals whose contacts or companies changed, per the delivery's
/// events (`contact.*`, `company.*`; other objects' events are ignored).
pub fn changed_portals(body: &[u8]) -> Result<BTreeSet<u64>, Refusal> {
    let events: Vec<Event> =
        serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let mut portals = BTreeSet::new();
    for event in events {
        let kind = event.subscription_type.unwrap_or_default();
        if !(kind.starts_with("contact.") || kind.starts_with("company.")) {
            continue;
        }
        let portal = match event.portal_id {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        portals.extend(portal.filter(|p| *p > 0));
    }
    Ok(portals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of HubSpot's request-validation page (its client secret,
    /// URI and body), signed v3 with a fixed timestamp. The expected value
    /// was computed independently with Python's `hmac` module:
    /// `base64(hmac.new(secret, b"POST" + uri + body + ts, sha256).digest())`.
    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://www.example.com/webhook_uri";
    const BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const TIMESTAMP: &str = "1564113600000";
    const EXPECTED: &str = "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw=";

    fn signed<'a>(signature: &'a str, timestamp: &'a str) -> Signed<'a> {
        Signed {
            signature: Some(signature),
            timestamp: Some(timestamp),
        }
    }

    #[test]
    fn hubspots_example_signs_as_documented() {
        let now = 1_564_113_600_000 + 1_000;
        let sig = signature(SECRET.as_bytes(), "POST", URI, BODY.as_bytes(), TIMESTAMP);
        assert_eq!(sig, EXPECTED);
        let check = |method: &str, uri: &str, body: &str, sig: &str, ts: &str, now: i64| {
            verify(
                SECRET.as_bytes(),
                method,
                uri,
                body.as_bytes(),
                signed(sig, ts),
                now,
            )
        };
        assert_eq!(check("POST", URI, BODY, EXPECTED, TIMESTAMP, now), Ok(()));
        // Any part changed: refused.
        let tampered = BODY.replace("62515", "62516");
        assert_eq!(
            check("POST", URI, &tampered, EXPECTED, TIMESTAMP, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check("GET", URI, BODY, EXPECTED, TIMESTAMP, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(
                "POST",
                "https://www.example.com/other",
                BODY,
                EXPECTED,
                TIMESTAMP,
                now
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check("POST", URI, BODY, "bm90IGl0", TIMESTAMP, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check("POST", URI, BODY, "%%%", TIMESTAMP, now),
            Err(Refusal::BadSignature)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            check("POST", URI, BODY, EXPECTED, "1564113600001", now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn old_future_and_unreadable_timestamps_are_refused() {
        let at = 1_564_113_600_000i64;
        let sig = signature(SECRET.as_bytes(), "POST", URI, BODY.as_bytes(), TIMESTAMP);
        let check = |now: i64| {
            verify(
                SECRET.as_bytes(),
                "POST",
                URI,
                BODY.as_bytes(),
                signed(&sig, TIMESTAMP),
                now,
            )
        };
        assert_eq!(check(at + MAX_AGE_MS), Ok(()));
        assert_eq!(check(at + MAX_AGE_MS + 1), Err(Refusal::Stale));
        assert_eq!(check(at - MAX_AGE_MS - 1), Err(Refusal::Stale));
        let unreadable = verify(
            SECRET.as_bytes(),
            "POST",
            URI,
            BODY.as_bytes(),
            signed(&sig, "yesterday"),
            at,
        );
        assert_eq!(unreadable, Err(Refusal::BadTimestamp));
        let missing = verify(
            SECRET.as_bytes(),
            "POST",
            URI,
            BODY.as_bytes(),
            Signed {
                signature: None,
                timestamp: Some(TIMESTAMP),
            },
            at,
        );
        assert_eq!(
            missing,
            Err(Refusal::MissingHeader("X-HubSpot-Signature-v3"))
        );
    }

    #[test]
    fn the_signed_uri_is_the_public_one_with_hubspots_characters_decoded() {
        assert_eq!(
            signed_uri("https://sync.example.com/", "/webhooks/hubspot"),
            "https://sync.example.com/webhooks/hubspot"
        );
        assert_eq!(
            signed_uri(
                "https://sync.example.com/crm",
                "/webhooks/hubspot?a=%3A%2f%3F%40%21%24%27%28%29%2A%2C%3B&b=%20%ZZ%"
            ),
            "https://sync.example.com/crm/webhooks/hubspot?a=:/?@!$'()*,;&b=%20%ZZ%"
        );
    }

    #[test]
    fn a_delivery_is_accepted_once() {
        let mut replays = Replays::default();
        assert_eq!(replays.admit("sig-a", 1_000, 1_000), Ok(()));
        assert_eq!(replays.admit("sig-b", 1_000, 1_000), Ok(()));
        assert_eq!(replays.admit("sig-a", 1_000, 2_000), Err(Refusal::Replayed));
    }

    #[test]
    fn portals_come_from_contact_and_company_events_only() {
        let body = br#"[
            {"portalId": 62515, "objectId": 1, "subscriptionType": "contact.propertyChange",
             "propertyName": "email", "propertyValue": null, "newField": {"x": [1]}},
            {"portalId": "777", "objectId": 2, "subscriptionType": "company.creation"},
            {"portalId": 888, "objectId": 3, "subscriptionType": "deal.creation"},
            {"portalId": null, "subscriptionType": "contact.deletion"},
            {"portalId": -4, "subscriptionType": "contact.merge"},
            {"subscriptionType": null},
            {}
        ]"#;
        assert_eq!(changed_portals(body).unwrap(), BTreeSet::from([62515, 777]));
        assert_eq!(changed_portals(b"[]").unwrap(), BTreeSet::new());
        for bad in [&b"{}"[..], b"", b"[1, 2]", b"null", b"[{\"portalId\": 1"] {
            assert!(matches!(changed_portals(bad), Err(Refusal::Malformed(_))));
        }
    }

    /// Any bytes at all: the parser answers, never panics, and finds only
    /// portals that are in the text.
    #[test]
    fn the_event_parser_takes_any_input() {
        let mut rng = fastrand::Rng::with_seed(0x4B5);
        let pieces = [
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"portalId\"",
            "\"subscriptionType\"",
            "\"contact.creation\"",
            "\"company.deletion\"",
            "\"deal.x\"",
            "null",
            "12",
            "-1",
            "1e400",
            "18446744073709551616",
            "\"62515\"",
            "true",
            "\"\\u0000\"",
            " ",
        ];
        for _ in 0..20_000 {
            let text: String = (0..rng.usize(0..24))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            if let Ok(portals) = changed_portals(text.as_bytes()) {
                for portal in portals {
                    assert!(text.contains(&portal.to_string()), "{text}");
                }
            }
            let mut bytes = text.into_bytes();
            if !bytes.is_empty() {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            let _ = changed_portals(&bytes);
        }
    }
}
