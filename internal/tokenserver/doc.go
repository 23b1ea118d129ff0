// Package tokenserver is keysmith's token server: it trades client credentials for
// short-lived JWT access tokens signed with ES256, RS256 or EdDSA (RFC 6749 §4.4,
// RFC 9068), publishes its keys (RFC 7517, RFC 8414), introspects tokens (RFC 7662),
// answers forward-auth requests for nginx, Traefik and Envoy, and authenticates
// Kubernetes API requests through webhook token authentication.
//
// It never reads credential Secrets: it sees APICredentials (client ID, secret hashes,
// grants, state) and APIDefinitions through an informer cache, and its signing keys
// through the one Secret the operator manages. Every request looks the credential up in
// memory, so a deactivated, expired, deleted or rotated-past-grace credential is refused
// as soon as the watch event arrives, including tokens issued before. No request reaches
// the API server.
package tokenserver
