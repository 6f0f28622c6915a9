// The `crmsync:sync/directory` import, supplied from JavaScript: an in-memory
// destination that a test fills before each call. Handles are stored
// normalised, as the contract requires; lookups see every record set.

let contacts = [];
let accounts = [];

/**
 * Replaces the directory: `[{ id, externalId?, emails: [], phones: [], fromSource? }]`;
 * `fromSource` lists the handles the linked source record brought (none by default).
 */
export function setDirectory(entries, accountEntries = []) {
  contacts = entries.map((c) => ({ domains: [], fromSource: [], ...c }));
  accounts = accountEntries.map((a) => ({ emails: [], phones: [], fromSource: [...a.domains], ...a }));
}

export function findByExternalId(externalId) {
  return contacts.find((c) => c.externalId === externalId);
}

export function findByHandle(kind, handle) {
  const field = kind === 'email' ? 'emails' : kind === 'phone' ? 'phones' : 'domains';
  return contacts.filter((c) => c[field].includes(handle));
}

export function findAccountByExternalId(externalId) {
  return accounts.find((a) => a.externalId === externalId);
}

export function findAccountsByDomain(domain) {
  return accounts.filter((a) => a.domains.includes(domain));
}

// `match-page`'s batched look-ups: everything any of the page's ids or
// handles finds, each record once.
export function findPage(externalIds, emails, phones) {
  return contacts.filter(
    (c) =>
      externalIds.includes(c.externalId) ||
      c.emails.some((e) => emails.includes(e)) ||
      c.phones.some((p) => phones.includes(p)),
  );
}

export function findAccountsPage(externalIds, domains) {
  return accounts.filter(
    (a) => externalIds.includes(a.externalId) || a.domains.some((d) => domains.includes(d)),
  );
}

// `match-keys-page`'s look-ups take a packed page (`page-keys`): each
// record's id, emails, phones and domains, key `k` the UTF-8 bytes
// `text[ends[k-1]..ends[k]]`, three counts a record.
export function unpackKeys({ text, ends, counts }) {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const records = [];
  let [start, k] = [0, 0];
  const next = () => {
    const end = ends[k++];
    const key = utf8.decode(text.subarray(start, end));
    start = end;
    return key;
  };
  for (let i = 0; i < counts.length; i += 3) {
    const externalId = next();
    const take = (n) => Array.from({ length: n }, next);
    records.push({ externalId, emails: take(counts[i]), phones: take(counts[i + 1]), domains: take(counts[i + 2]) });
  }
  return records;
}

export function findPageKeys(keys) {
  const records = unpackKeys(keys);
  return findPage(
    records.map((r) => r.externalId),
    records.flatMap((r) => r.emails),
    records.flatMap((r) => r.phones),
  );
}

export function findAccountsPageKeys(keys) {
  const records = unpackKeys(keys);
  return findAccountsPage(
    records.map((r) => r.externalId),
    records.flatMap((r) => r.domains),
  );
}
