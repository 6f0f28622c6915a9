// The `crmsync:sync/directory` import, supplied from JavaScript: an in-memory
// destination that a test fills before each call. Handles are stored
// normalised, as the contract requires; lookups see every record set.

let contacts = [];
let accounts = [];

/** Replaces the directory: `[{ id, externalId?, emails: [], phones: [] }]`. */
export function setDirectory(entries, accountEntries = []) {
  contacts = entries.map((c) => ({ domains: [], ...c }));
  accounts = accountEntries.map((a) => ({ emails: [], phones: [], ...a }));
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
