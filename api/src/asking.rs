//! A request to the logic tier from the HTTP runtime: handed over through
//! `logic::direct` at once, its answer awaited later (so a batch has all
//! its requests in the tier together), by a deadline. Both the API routes
//! and the admin port's storage probe ask this way.

use std::time::Duration;

use logic::direct::{Direct, Pending, Unanswered};
use protocol::{Body, ErrorCode, Request};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// A request in the logic tier.
pub struct Asked<'a> {
    rx: oneshot::Receiver<Result<Body, Unanswered>>,
    waiting: Waiting<'a>,
    deadline: tokio::time::Instant,
}

/// Makes a request as `uid` now; its answer is due within `timeout`.
pub fn start(direct: &Direct, uid: u64, body: Body, timeout: Duration) -> Asked<'_> {
    let (tx, rx) = oneshot::channel();
    let pending = direct.request(
        uid,
        body,
        Box::new(move |answer| {
            let _ = tx.send(answer);
        }),
    );
    Asked {
        rx,
        waiting: Waiting {
            direct,
            pending: Some(pending),
        },
        deadline: tokio::time::Instant::now() + timeout,
    }
}

impl Asked<'_> {
    /// The answer; an error frame, no answer by the deadline, or a tier
    /// that is stopping becomes an [`ApiError`].
    pub async fn answer(mut self) -> Result<Body, ApiError> {
        match tokio::time::timeout_at(self.deadline, &mut self.rx).await {
            Ok(Ok(answer)) => {
                self.waiting.pending = None;
                match answer? {
                    Body::Error(e) => Err(ApiError::from_error(e)),
                    body => Ok(body),
                }
            }
            Ok(Err(_)) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the logic tier is stopping",
            )),
            Err(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                "the logic tier did not answer in time; a send may still be stored: retry with the same client_msg_id",
            )),
        }
    }

    /// The answer as request `R`'s response (the client's `Request` pairing).
    pub async fn response<R: Request>(self) -> Result<R::Response, ApiError> {
        let body = self.answer().await?;
        let name = body.name();
        R::response(body).ok_or_else(|| ApiError::unexpected(name))
    }
}

/// Forgets a request still waiting when its caller stops waiting (the
/// deadline passed, or the HTTP client hung up).
struct Waiting<'a> {
    direct: &'a Direct,
    pending: Option<Pending>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.direct.cancel(pending);
        }
    }
}
