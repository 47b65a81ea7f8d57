//! Infrastructure every service shares and that is not domain: the JWT key files
//! ([`keys`]), access tokens ([`token`]), the `application/problem+json` error body
//! ([`problem`]), and the defences of a login: TOTP second-factor codes ([`totp`]) and a limit
//! on attempts per username or client ([`rate_limit`]), and the Prometheus metrics every
//! service serves ([`metrics`]). It does I/O (files, clock) so the domain can stay pure.

pub mod http;
pub mod keys;
pub mod metrics;
pub mod nats_auth;
pub mod password;
pub mod problem;
pub mod rate_limit;
pub mod retry;
pub mod streams;
pub mod task;
pub mod telemetry;
pub mod token;
pub mod totp;
