//! Pages of list endpoints: `GET …?limit=N&after=CURSOR`.
//!
//! Every list (`clips`, `alerts`, `activity`, `devices`, `audit`, `approvals`) answers a JSON
//! array, the body older clients parse, of at most `limit` items (default [`DEFAULT_LIMIT`], at
//! most [`MAX_LIMIT`]), so no list can grow an answer (and the console's memory) without bound.
//! When more items may follow, the answer carries
//!
//! ```text
//! X-Next-Cursor: <cursor>        ask again with ?after=<cursor> (same filters) for the next page
//! ```
//!
//! and its absence means the list is done. A cursor is opaque to callers (it is the row id of the
//! page's last item); each list keeps one fixed order, so following cursors visits every item
//! once, including items added at the end meanwhile.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Items in a page when the caller names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items a caller may ask for in one page.
pub const MAX_LIMIT: usize = 1000;
/// The header naming the next page's cursor.
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// `?limit=&after=` as sent (text, so a bad value gets a message naming it rather than the
/// framework's generic refusal).
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
}

/// A checked page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: usize,
    /// Row id of the last item of the previous page.
    pub after: Option<i64>,
}

impl PageRequest {
    /// What to pass as SQL `LIMIT`: one more than the page, to learn whether more follow.
    pub fn sql_limit(&self) -> i64 {
        self.limit as i64 + 1
    }
}

impl PageQuery {
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        page_request(self.limit.as_deref(), self.after.as_deref())
    }
}

/// Checks `limit` and `after` of a list request.
pub fn page_request(limit: Option<&str>, after: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"
                )))
            }
        },
    };
    let after = match after {
        None => None,
        Some(text) => Some(text.trim().parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "after must be a cursor from the {NEXT_CURSOR} header of the previous page, not {text:?}"
            ))
        })?),
    };
    Ok(PageRequest { limit, after })
}

/// One page of a list and, when more may follow, the cursor of the next.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

impl<T> Page<T> {
    /// From the rows a query with [`PageRequest::sql_limit`] returned, each with its cursor.
    pub fn from_rows(rows: Vec<(i64, T)>, req: PageRequest) -> Page<T> {
        let more = rows.len() > req.limit;
        let mut items = Vec::with_capacity(rows.len().min(req.limit));
        let mut last = None;
        for (cursor, item) in rows.into_iter().take(req.limit) {
            last = Some(cursor);
            items.push(item);
        }
        Page { items, next: if more { last } else { None } }
    }
}

impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        if let Some(next) = self.next {
            response.headers_mut().insert(NEXT_CURSOR, HeaderValue::from(next));
        }
        response
    }
}
