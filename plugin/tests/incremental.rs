//! Property test of incremental reads (R4): against a simulated search API
//! that sorts by one property, breaks ties in an arbitrary order that changes
//! from query to query, and returns short pages, every record modified in the
//! window comes back exactly once and nothing outside it does — however many
//! records share a timestamp. Seeded and deterministic.

use crmsync_plugin::hubspot::{Object, SEARCH_PAGE_LIMIT, fetch_page};
use crmsync_plugin::transport::{HttpRequest, HttpResponse, Transport, TransportError};
use crmsync_plugin::types::{HubspotScope, HubspotSource, TimeWindow};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A search endpoint over `(id, lastmodifieddate)` records.
struct SimulatedSearch {
    records: Vec<(u64, u64)>,
    /// The server returns at most this many per page (may be below `limit`).
    page_size: usize,
    rng: fastrand::Rng,
    queries: usize,
}

impl SimulatedSearch {
    fn matches(record: (u64, u64), filter: &Value) -> bool {
        let (id, at) = record;
        let value: u64 = filter["value"].as_str().unwrap().parse().unwrap();
        let actual = match filter["propertyName"].as_str().unwrap() {
            "lastmodifieddate" => at,
            "hs_object_id" => id,
            other => panic!("unexpected filter property {other}"),
        };
        match filter["operator"].as_str().unwrap() {
            "GTE" => actual >= value,
            "GT" => actual > value,
            "LTE" => actual <= value,
            "LT" => actual < value,
            "EQ" => actual == value,
            other => panic!("unexpected operator {other}"),
        }
    }
}

impl Transport for SimulatedSearch {
    fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        self.queries += 1;
        assert!(request.url.ends_with("/crm/v3/objects/contacts/search"));
        let body: Value = serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        let sorts = body["sorts"].as_array().unwrap();
        assert_eq!(sorts.len(), 1, "the API takes one sort");
        let limit = body["limit"].as_u64().unwrap() as usize;
        assert!(limit <= SEARCH_PAGE_LIMIT);
        let groups = body["filterGroups"].as_array().unwrap();
        let mut hits: Vec<(u64, u64)> = self
            .records
            .iter()
            .copied()
            .filter(|r| {
                groups.iter().any(|g| {
                    g["filters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|f| Self::matches(*r, f))
                })
            })
            .collect();
        // Ties in a new arbitrary order for every query.
        self.rng.shuffle(&mut hits);
        match sorts[0]["propertyName"].as_str().unwrap() {
            "lastmodifieddate" => hits.sort_by_key(|r| r.1),
            "hs_object_id" => hits.sort_by_key(|r| r.0),
            other => panic!("unexpected sort {other}"),
        }
        let after: usize = body["after"].as_str().map_or(0, |a| a.parse().unwrap());
        assert!(after + limit <= 10_000, "past the 10,000-result cap");
        let take = limit.min(self.page_size);
        let page: Vec<Value> = hits
            .iter()
            .skip(after)
            .take(take)
            .map(|(id, at)| {
                json!({"id": id.to_string(), "archived": false,
                       "properties": {"hs_object_id": id.to_string(), "lastmodifieddate": at.to_string()}})
            })
            .collect();
        let mut answer = json!({"total": hits.len(), "results": page});
        if after + take < hits.len() {
            let next = (after + take).to_string();
            answer["paging"] = json!({"next": {"after": next}});
        }
        Ok(HttpResponse {
            status: 200,
            retry_after: None,
            body: answer.to_string().into_bytes(),
        })
    }
}

#[test]
fn every_record_in_the_window_is_read_exactly_once_whatever_the_ties() {
    for seed in 0..60u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Few distinct times, so many records share one; some groups exceed a page.
        let distinct = rng.u64(1..40);
        let count = rng.usize(0..900);
        let records: Vec<(u64, u64)> = (1..=count as u64)
            .map(|id| (id * 3, 1_000 + rng.u64(0..distinct) * 10))
            .collect();
        let window = TimeWindow {
            since: 1_000 + rng.u64(0..distinct) * 5,
            until: 1_000 + rng.u64(0..distinct * 10 + 20),
        };
        let mut server = SimulatedSearch {
            records: records.clone(),
            page_size: rng.usize(1..60),
            rng: fastrand::Rng::with_seed(seed ^ 0xfeed),
            queries: 0,
        };
        let source = HubspotSource {
            base_url: "https://api.hubapi.com".into(),
            scope: HubspotScope::Modified(window),
            properties: vec!["email".into()],
            filters: Vec::new(),
            with_companies: false,
        };
        let mut read: BTreeMap<String, usize> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                fetch_page(&mut server, Object::Contacts, &source, cursor.as_deref()).unwrap();
            for record in &page.records {
                *read.entry(record.id.clone()).or_default() += 1;
            }
            assert!(server.queries < 10_000, "seed {seed}: paging never ends");
            match page.next_cursor {
                Some(next) => {
                    assert_ne!(Some(&next), cursor.as_ref(), "seed {seed}: no progress");
                    cursor = Some(next);
                }
                None => break,
            }
        }
        let expected: BTreeMap<String, usize> = records
            .iter()
            .filter(|(_, at)| (window.since..=window.until).contains(at))
            .map(|(id, _)| (id.to_string(), 1))
            .collect();
        assert_eq!(read, expected, "seed {seed}");
    }
}
