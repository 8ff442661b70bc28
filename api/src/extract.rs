//! Request parts the handlers take, each refusing bad input with an
//! [`ApiError`] (axum's own extractors answer in plain text): a JSON body
//! within the size limit, path and query parameters.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use protocol::ErrorCode;
use serde::de::DeserializeOwned;

use crate::Api;
use crate::error::ApiError;

/// A JSON body of at most `api.max_body_bytes`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<std::sync::Arc<Api>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &std::sync::Arc<Api>) -> Result<Self, ApiError> {
        let limit = api.config.max_body_bytes;
        let too_large = || {
            ApiError::new(
                ErrorCode::FrameTooLarge,
                format!("the body is over {limit} bytes"),
            )
        };
        let announced = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    too_large()
                } else {
                    ApiError::invalid(format!("cannot read the body: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))
    }
}

/// Whether reading a body failed on its length limit (the error's chain
/// names it; http-body-util's `LengthLimitError` is not re-exported).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("length limit exceeded") {
            return true;
        }
        source = err.source();
    }
    false
}

/// Declares `$name<T>`, axum's `$inner<T>` with its rejection as an
/// [`ApiError`] (400 INVALID_ARGUMENT, axum's reason as the message).
macro_rules! params {
    ($(#[$doc:meta])* $name:ident, $inner:ident) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<T, S> FromRequestParts<S> for $name<T>
        where
            T: DeserializeOwned + Send,
            S: Send + Sync,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                $inner::<T>::from_request_parts(parts, state)
                    .await
                    .map(|$inner(t)| $name(t))
                    .map_err(|e| ApiError::invalid(e.body_text()))
            }
        }
    };
}

params!(
    /// Path parameters.
    PathParams,
    Path
);
params!(
    /// Query parameters.
    QueryParams,
    Query
);

/// A u64 written as the document's `^[0-9]{1,19}$` (every such value
/// fits; `u64::from_str` would also take a `+` or a 20th digit).
pub fn decimal(text: &str, field: &str) -> Result<u64, ApiError> {
    let well_formed = (1..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    match well_formed {
        true => text
            .parse()
            .map_err(|_| ApiError::invalid(format!("{field}: {text:?} is not a number"))),
        false => Err(ApiError::invalid(format!(
            "{field}: {text:?} is not 1 to 19 decimal digits"
        ))),
    }
}

/// A uid from the outside world: 1 or more.
pub fn uid(value: u64, field: &str) -> Result<u64, ApiError> {
    match value {
        0 => Err(ApiError::invalid(format!(
            "{field} must be a uid (1 or more)"
        ))),
        uid => Ok(uid),
    }
}

/// For optional JSON fields: absent is `None`, `null` is refused (the
/// document says a field is there with its type, or not there).
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}
