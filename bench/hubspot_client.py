"""The baseline a user would write instead of crmsync: HubSpot's official
Python client (hubspot-api-client) paging every contact into a JSON-lines
file. Usage: hubspot_client.py BASE_URL OUT_FILE"""

import json
import sys

from hubspot import HubSpot

PROPERTIES = ["firstname", "lastname", "email", "hs_additional_emails", "phone", "mobilephone"]


def main() -> None:
    base_url, out_path = sys.argv[1], sys.argv[2]
    client = HubSpot(access_token="bench-token")
    api = client.crm.contacts.basic_api
    api.api_client.configuration.host = base_url
    after = None
    with open(out_path, "w", encoding="utf-8") as out:
        while True:
            page = api.get_page(limit=100, after=after, properties=PROPERTIES, archived=False)
            for contact in page.results:
                out.write(json.dumps({"id": contact.id, "properties": contact.properties}) + "\n")
            if page.paging is None or page.paging.next is None:
                break
            after = page.paging.next.after


if __name__ == "__main__":
    main()
