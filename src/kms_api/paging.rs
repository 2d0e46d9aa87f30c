//! List paging and sorting as OCI does it: `limit` and `page` in the query, the next page's
//! token in the `opc-next-page` header — absent on the last page, since the CLI's `--all`
//! loops for as long as it is present.
//!
//! The page token is the id of the last item returned (ids are URL-safe, so the token needs
//! no percent-encoding): the next page starts after that item in the same sort order, which
//! stays correct when items are created between two calls.

use super::error::ApiError;
use super::Query;

/// Page size when the request has no `limit` (the CLI's `--all` sends none).
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// Largest page size accepted.
pub(crate) const MAX_LIMIT: usize = 1000;

/// A list item: what paging and sorting need to know.
pub(crate) trait Listed {
    /// The id (the page token when it ends a page).
    fn id(&self) -> &str;
    /// The name `sortBy=DISPLAYNAME` sorts by.
    fn name(&self) -> &str;
}

/// One page of `items` (oldest first, as the store lists them), sorted as the query asks
/// (`sortBy` TIMECREATED — newest first by default, OCI's order — or DISPLAYNAME, A to Z by
/// default; `sortOrder` ASC|DESC), and the token of the next page.
pub(crate) fn page<T: Listed>(mut items: Vec<T>, query: &Query) -> Result<(Vec<T>, Option<String>), ApiError> {
    let by_name = match query.get("sortBy") {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("TIMECREATED") => false,
        Some(s) if s.eq_ignore_ascii_case("DISPLAYNAME") => true,
        Some(s) => {
            return Err(ApiError::invalid(format!(
                "sortBy must be TIMECREATED or DISPLAYNAME, not '{s}'"
            )))
        }
    };
    let descending = match query.get("sortOrder") {
        None => !by_name,
        Some(s) if s.eq_ignore_ascii_case("ASC") => false,
        Some(s) if s.eq_ignore_ascii_case("DESC") => true,
        Some(s) => return Err(ApiError::invalid(format!("sortOrder must be ASC or DESC, not '{s}'"))),
    };
    if by_name {
        // Stable: equal names keep creation order.
        items.sort_by(|a, b| a.name().cmp(b.name()));
    }
    if descending {
        items.reverse();
    }
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::invalid(format!("limit must be 1–{MAX_LIMIT}, not '{l}'"))),
        },
    };
    let start = match query.get("page") {
        None => 0,
        Some(token) => {
            items
                .iter()
                .position(|i| i.id() == token)
                .ok_or_else(|| ApiError::invalid(format!("page token '{token}' is not valid for this list")))?
                + 1
        }
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = if rest.len() > limit {
        rest.truncate(limit);
        rest.last().map(|i| i.id().to_owned())
    } else {
        None
    };
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Item(String, String);
    impl Listed for Item {
        fn id(&self) -> &str {
            &self.0
        }
        fn name(&self) -> &str {
            &self.1
        }
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item(format!("id{i:03}"), format!("name{}", (n - i) % 7)))
            .collect()
    }

    fn query(pairs: &[(&str, &str)]) -> Query {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn pages_cover_every_item_once_and_the_last_has_no_token() {
        for sort in [vec![], vec![("sortBy", "DISPLAYNAME")], vec![("sortOrder", "ASC")]] {
            let mut seen = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let mut q = sort.clone();
                q.push(("limit", "7"));
                if let Some(t) = &token {
                    q.push(("page", t));
                }
                let (got, next) = page(items(50), &query(&q)).unwrap();
                assert!(got.len() <= 7);
                seen.extend(got.into_iter().map(|i| i.0));
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 50, "sort {sort:?}");
            assert_eq!(seen.len(), 50);
        }
    }

    #[test]
    fn default_order_is_newest_first_and_exact_pages_end_without_token() {
        let (got, next) = page(items(3), &query(&[])).unwrap();
        assert_eq!(
            got.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
            ["id002", "id001", "id000"]
        );
        assert_eq!(next, None);
        let (_, next) = page(items(3), &query(&[("limit", "3")])).unwrap();
        assert_eq!(next, None);
    }

    #[test]
    fn bad_parameters_are_400() {
        for q in [
            vec![("limit", "0")],
            vec![("limit", "x")],
            vec![("sortBy", "SIZE")],
            vec![("page", "nope")],
        ] {
            assert_eq!(page(items(3), &query(&q)).unwrap_err().status, 400);
        }
    }
}
