//! The command line as a client of the KMS API.
//!
//! Vault, key, key-version and crypto commands are calls of the OCI-compatible KMS API, sent
//! through the admin socket to a running server — or, when none runs, answered in-process on
//! the data directory. Either way the API's own handler answers, as the local administrator
//! ([`crate::kms_api::answer_local_with`]): each operation is defined once, and the CLI shows
//! what the `oci` CLI shows.

use anyhow::Context;
use serde_json::Value;

use super::{dispatch, GlobalOpts};
use crate::admin::{ApiCall, Request};

/// Sends the KMS API calls of one command.
pub(super) struct Api<'a> {
    global: &'a GlobalOpts,
}

impl<'a> Api<'a> {
    pub(super) fn new(global: &'a GlobalOpts) -> Self {
        Api { global }
    }

    /// One call: its answer, and the next page's token of a list.
    fn call(&self, method: &str, target: &str, body: Value) -> anyhow::Result<(Value, Option<String>)> {
        let mut answer = dispatch(
            self.global,
            Request::Api(ApiCall {
                method: method.to_owned(),
                target: target.to_owned(),
                body,
            }),
        )?;
        let next = answer["nextPage"].as_str().map(str::to_owned);
        Ok((answer["data"].take(), next))
    }

    pub(super) fn get(&self, target: &str) -> anyhow::Result<Value> {
        Ok(self.call("GET", target, Value::Null)?.0)
    }

    pub(super) fn post(&self, target: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.call("POST", target, body)?.0)
    }

    pub(super) fn put(&self, target: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.call("PUT", target, body)?.0)
    }

    /// Every page of a list, as one array, oldest first.
    pub(super) fn list(&self, target: &str) -> anyhow::Result<Value> {
        let sep = if target.contains('?') { '&' } else { '?' };
        let target = &format!("{target}{sep}sortBy=TIMECREATED&sortOrder=ASC&limit=1000");
        let mut items = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let paged = match &page {
                None => target.to_owned(),
                Some(token) => {
                    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
                    format!("{target}&page={token}")
                }
            };
            let (answer, next) = self.call("GET", &paged, Value::Null)?;
            match answer {
                Value::Array(mut a) => items.append(&mut a),
                other => anyhow::bail!("the API answered a list call with {other}"),
            }
            match next {
                Some(token) if page.as_ref() != Some(&token) => page = Some(token),
                _ => return Ok(Value::Array(items)),
            }
        }
    }

    /// The data directory's tenancy id (the root compartment).
    pub(super) fn tenancy(&self) -> anyhow::Result<String> {
        let answer = dispatch(self.global, Request::Tenancy)?;
        answer["tenancyId"]
            .as_str()
            .map(str::to_owned)
            .context("the server did not say its tenancy")
    }

    /// The default key (created with its vault on first use).
    pub(super) fn default_key(&self) -> anyhow::Result<String> {
        let status = dispatch(self.global, Request::Status)?;
        status["defaultKeyId"]
            .as_str()
            .map(str::to_owned)
            .context("the server did not say its default key")
    }
}
