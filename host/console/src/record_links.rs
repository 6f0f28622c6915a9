//! Where a person sees a source record in its own CRM: the link the console
//! puts beside every error. HubSpot's record pages live under the portal's
//! id; Salesforce's Lightning pages under the org's instance URL and the
//! record's object, which its id's three-character key prefix tells.

use crmsync_engine::config::{Config, SourceSystem, SyncObject};

/// The source CRM's page of record `id` of `config`'s sync, when it can be
/// known: HubSpot needs `source.portal_id`; ids of any other shape (a
/// hostile or unexpected value) get no link.
pub fn record_url(config: &Config, id: &str) -> Option<String> {
    match &config.source.system {
        SourceSystem::Hubspot => {
            let portal = config.source.portal_id?;
            if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let object = match config.object {
                SyncObject::Contacts => "0-1",
                SyncObject::Companies => "0-2",
            };
            Some(format!(
                "https://app.hubspot.com/contacts/{portal}/record/{object}/{id}"
            ))
        }
        SourceSystem::Salesforce { .. } => {
            if !matches!(id.len(), 15 | 18) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            let object = match &id[..3] {
                "003" => "Contact",
                "00Q" => "Lead",
                "001" => "Account",
                _ => return None,
            };
            Some(format!(
                "{}/lightning/r/{object}/{id}/view",
                config.source.base_url
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, "links", Path::new("/tmp")).unwrap()
    }

    #[test]
    fn hubspot_records_link_to_their_portal() {
        let contacts = config("[source]\nsystem = \"hubspot\"\nportal_id = 62515\n");
        assert_eq!(
            record_url(&contacts, "123").as_deref(),
            Some("https://app.hubspot.com/contacts/62515/record/0-1/123")
        );
        let companies =
            config("[source]\nsystem = \"hubspot\"\nportal_id = 62515\nobject = \"companies\"\n");
        assert_eq!(
            record_url(&companies, "9").as_deref(),
            Some("https://app.hubspot.com/contacts/62515/record/0-2/9")
        );
        for hostile in [
            "",
            "12/../x",
            "javascript:alert(1)",
            "1\"2",
            &"9".repeat(40),
        ] {
            assert_eq!(record_url(&contacts, hostile), None, "{hostile}");
        }
        let no_portal = config("[source]\nsystem = \"hubspot\"\n");
        assert_eq!(record_url(&no_portal, "123"), None);
    }

    #[test]
    fn salesforce_records_link_to_their_lightning_page() {
        let sf = config(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"https://acme.my.salesforce.com\"\n",
        );
        assert_eq!(
            record_url(&sf, "003000000000001AAA").as_deref(),
            Some("https://acme.my.salesforce.com/lightning/r/Contact/003000000000001AAA/view")
        );
        assert_eq!(
            record_url(&sf, "00Q000000000001").as_deref(),
            Some("https://acme.my.salesforce.com/lightning/r/Lead/00Q000000000001/view")
        );
        assert_eq!(record_url(&sf, "006000000000001AAA"), None);
        assert_eq!(record_url(&sf, "003<script>00001AA"), None);
    }
}
