//! CloudStack's wire format, exactly as real clients expect it
//! (`../shared/reference/cloudstack-api.md` is the contract):
//!
//! - [`params`]: a request's parameters as CloudStack's servlet sees them
//!   (query string plus form body), names case-insensitive, `name[i].field` maps;
//! - [`signature`]: apiKey/secretKey signatures (v2, and v3 with `expires`),
//!   canonicalised as the Java server does, with the known client variants;
//! - [`envelope`]: `<command>response` envelopes in JSON and XML, lists with
//!   `count`, empty lists as `{}`;
//! - [`error`]: error codes, `cserrorcode`s and the exact texts clients match on;
//! - [`date`]: CloudStack's date format;
//! - [`views`]: model objects as responses and job results show them.

pub mod date;
pub mod envelope;
pub mod error;
pub mod params;
pub mod signature;
pub mod views;

pub use envelope::Format;
pub use error::{ApiError, ErrorCode};
pub use params::{Params, RawParams};
