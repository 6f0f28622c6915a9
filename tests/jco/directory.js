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
