//! `habilis-admin`: the Habilis administration console.
//!
//! It will hold server-rendered pages (dashboard with live attack indicators, accounts,
//! organisations, clients, habilitation profiles with policy preview, relationships, audit log,
//! keys), mounted at `/admin` by `habilis serve` or run as its own process. It is an ordinary
//! OpenID Connect client of Habilis (code + PKCE, `acr >= eidas2` by default) and uses only the
//! admin REST API. Nothing is implemented yet: the console is the subject of its own issue.
