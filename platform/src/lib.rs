//! Infrastructure every service shares and that is not domain: the JWT key files
//! ([`keys`]), access tokens ([`token`]), the `application/problem+json` error body
//! ([`problem`]), and TOTP second-factor codes for a login ([`totp`]). It does I/O (files,
//! clock) so the domain can stay pure.

pub mod keys;
pub mod nats_auth;
pub mod password;
pub mod problem;
pub mod retry;
pub mod streams;
pub mod token;
pub mod totp;
