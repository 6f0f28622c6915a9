// The `crmsync:sync/directory` import, supplied from JavaScript: an in-memory
// destination that a test fills before each call. Handles are stored
// normalised, as the contract requires; lookups see every contact set.

let contacts = [];

/** Replaces the directory: `[{ id, externalId?, emails: [], phones: [] }]`. */
export function setDirectory(entries) {
  contacts = entries;
}

export function findByExternalId(externalId) {
  return contacts.find((c) => c.externalId === externalId);
}

export function findByHandle(kind, handle) {
  const field = kind === 'email' ? 'emails' : 'phones';
  return contacts.filter((c) => c[field].includes(handle));
}
