//! Every error the API answers: `{"code": "<wire ErrorCode name>",
//! "message": "..."}`, the code a client of the native protocol would get
//! for the same fault, and an HTTP status that fits it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use logic::direct::Unanswered;
use protocol::{ErrorCode, pb};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadFrame | ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::NotLoggedIn | ErrorCode::AuthFailed => StatusCode::UNAUTHORIZED,
            ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ContentRejected => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal | ErrorCode::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An error frame the logic tier answered, as the API says it.
    pub fn from_error(e: pb::Error) -> ApiError {
        ApiError::new(
            ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal),
            e.message,
        )
    }

    /// The logic tier answered with a body other than the one expected (a
    /// bug, logged).
    pub fn unexpected(answered: &str) -> ApiError {
        log::error!("the logic tier answered an unexpected {answered}");
        ApiError::new(ErrorCode::Internal, "unexpected answer from the logic tier")
    }
}

impl From<Unanswered> for ApiError {
    fn from(e: Unanswered) -> ApiError {
        let code = match e {
            Unanswered::Busy | Unanswered::Stopped => ErrorCode::Unavailable,
            Unanswered::Garbled => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.as_str_name(),
            message: &self.message,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if self.code == ErrorCode::RateLimited {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
