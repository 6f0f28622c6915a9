//! Phone numbers as one person's handle whatever their format: parsed with
//! libphonenumber's data (the `phonenumber` crate) and written in E.164, a
//! national number read as the configured region's (`matching.default_region`).
//!
//! Under M3's digits-only rule `(415) 555-0101` and `+1 415-555-0101` are two
//! handles (`4155550101`, `+14155550101`), so one person was created twice or
//! never matched. Only parsing is required, not validity: libphonenumber calls
//! reserved ranges such as 555-01xx invalid, and those are still someone's
//! number in a CRM.

use phonenumber::Mode;
use phonenumber::country::Id;

/// `raw` in E.164, national numbers read as `region`'s; why not, otherwise.
pub fn e164(raw: &str, region: &str) -> Result<String, String> {
    let country: Id =
        region.trim().to_ascii_uppercase().parse().map_err(|_| {
            format!("cannot be read: {region:?} is not a region libphonenumber knows")
        })?;
    let number = phonenumber::parse(Some(country), raw.trim()).map_err(|e| {
        format!("is not a phone number of region {region} or in international form ({e})")
    })?;
    Ok(number.format().mode(Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_in_any_format_is_one_handle() {
        for raw in [
            "(415) 555-0101",
            "+1 415-555-0101",
            "415.555.0101",
            "1-415-555-0101",
            "+1 (415) 555 0101",
            " 4155550101 ",
        ] {
            assert_eq!(e164(raw, "US").as_deref(), Ok("+14155550101"), "{raw}");
        }
        // A national number is the region's; an international one keeps its own.
        assert_eq!(e164("020 7946 0018", "GB").as_deref(), Ok("+442079460018"));
        assert_eq!(
            e164("+44 20 7946 0018", "US").as_deref(),
            Ok("+442079460018")
        );
        assert_eq!(e164("01 42 68 53 00", "fr").as_deref(), Ok("+33142685300"));
    }

    #[test]
    fn what_does_not_parse_says_why() {
        assert!(e164("call me", "US").is_err());
        assert!(e164("12", "US").is_err());
        let unknown = e164("4155550101", "ZZ").unwrap_err();
        assert!(unknown.contains("ZZ"), "{unknown}");
    }
}
