//! The web console at `/console/` on the KMS API's listener: vaults, keys, versions,
//! rotation and the key-rotation compliance view, for people rather than the `oci` CLI.
//!
//! Every page and action is a KMS API call made as the signed-in user ([`KmsApi::answer_as`]):
//! the same handlers, IAM policies, validation and audit entries as a signed request, so the
//! console has no rule of its own. Pages are server-rendered HTML (maud) that work without
//! JavaScript; each action asks for confirmation on a page of its own and posts a form
//! carrying the session's CSRF token.
//!
//! - [`session`]: sign-in sessions, cookies, CSRF tokens.
//! - [`password`]: Argon2id password hashes (`sealstore iam user set-password`).
//! - [`pages`]: the HTML.

pub(crate) mod pages;
pub(crate) mod password;
pub(crate) mod session;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use kms_core::iam::{ResourceKind, Target, Verb};
use kms_core::Ocid;
use maud::Markup;
use serde_json::{json, Value};

use crate::kms_api::signature::Caller;
use crate::kms_api::{ApiError, KmsApi, Query};
use session::{Session, Sessions};

/// Where the console is served.
pub(crate) const PREFIX: &str = "/console";
/// Keys whose current version is older than this many days are listed on the compliance
/// page unless it is asked for another age.
pub(crate) const DEFAULT_MAX_KEY_AGE_DAYS: i64 = 365;
/// Vault deletion can be scheduled this many days ahead, as in OCI.
pub(crate) const DELETION_DAYS: std::ops::RangeInclusive<i64> = 7..=30;

/// The console's state: its sessions and sign-in throttles.
#[derive(Debug)]
pub(crate) struct Console {
    sessions: Sessions,
    throttle: session::SignInThrottle,
    /// Failed sign-ins per client address (any names).
    source_throttle: session::SignInThrottle,
}

/// A console answer.
pub(crate) type Response = http::Response<Full<Bytes>>;

/// One request, parsed.
struct Request<'a> {
    method: &'a Method,
    segments: Vec<&'a str>,
    query: Query,
    form: Query,
    headers: &'a http::HeaderMap,
    /// `console <client address>`: where the audit log says the user's calls came from.
    source: String,
}

impl Request<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: Sessions::default(),
            throttle: session::SignInThrottle::default(),
            source_throttle: session::SignInThrottle::with_max(session::MAX_FAILURES_PER_SOURCE),
        }
    }
}

/// Where a console on a data directory keeps its failed sign-ins per user name and per
/// client address, so that a restart does not lift a lockout.
pub(crate) const SIGN_IN_FAILURES_FILE: &str = "console-sign-in-failures.json";
/// See [`SIGN_IN_FAILURES_FILE`].
pub(crate) const SIGN_IN_FAILURES_BY_ADDRESS_FILE: &str = "console-sign-in-failures-by-address.json";

impl Console {
    /// A console whose sign-in lockouts are kept in `data_dir` across restarts.
    pub(crate) fn persistent(data_dir: &std::path::Path) -> Self {
        Console {
            sessions: Sessions::default(),
            throttle: session::SignInThrottle::persistent(session::MAX_FAILURES, data_dir.join(SIGN_IN_FAILURES_FILE)),
            source_throttle: session::SignInThrottle::persistent(
                session::MAX_FAILURES_PER_SOURCE,
                data_dir.join(SIGN_IN_FAILURES_BY_ADDRESS_FILE),
            ),
        }
    }

    /// Answers a request whose path starts with [`PREFIX`] (blocking work: run it off the
    /// async workers).
    pub(crate) fn handle(&self, api: &KmsApi, parts: &http::request::Parts, body: &[u8]) -> Response {
        let path = parts.uri.path();
        let rest = path.strip_prefix(PREFIX).unwrap_or(path);
        let parse = |s: &[u8]| -> Query { form_urlencoded::parse(s).into_owned().collect() };
        let req = Request {
            method: &parts.method,
            segments: rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect(),
            query: parse(parts.uri.query().unwrap_or("").as_bytes()),
            form: if parts.method == Method::POST {
                parse(body)
            } else {
                Query::new()
            },
            headers: &parts.headers,
            source: format!(
                "console {}",
                parts
                    .extensions
                    .get::<crate::http_server::ClientAddr>()
                    .map_or_else(|| "?".to_owned(), |a| a.0.to_string())
            ),
        };
        let token = session::token_of(req.headers);
        let session = token.as_deref().and_then(|t| self.sessions.get(t)).map(|mut s| {
            s.may_read_audit = api.allows(
                &Caller::user(s.user_id.clone(), s.user_name.clone()),
                Verb::Read,
                ResourceKind::AuditEvents,
                &api.kms().tenancy_id(),
                Target::default(),
            );
            s
        });
        match (req.method, req.segments.as_slice()) {
            (&Method::GET, ["login"]) => match session {
                Some(_) => redirect("/console/vaults"),
                None => login_page(api, &req, StatusCode::OK, None),
            },
            (&Method::POST, ["login"]) => self.login(api, &req),
            (_, ["login"]) => not_allowed(),
            _ => {
                let Some(session) = session else {
                    return match *req.method {
                        Method::GET => redirect("/console/login"),
                        _ => html(
                            StatusCode::FORBIDDEN,
                            pages::message(None, "Not signed in", "Sign in first."),
                        ),
                    };
                };
                if *req.method == Method::POST && !session::csrf_ok(&session, req.form.get("csrf").map(String::as_str))
                {
                    return html(
                        StatusCode::FORBIDDEN,
                        pages::message(
                            Some(&session),
                            "Refused",
                            "This form did not come from your console session (missing or wrong CSRF token).",
                        ),
                    );
                }
                let view = View {
                    api,
                    session: &session,
                    caller: Caller::user(session.user_id.clone(), session.user_name.clone()).from(req.source.clone()),
                };
                let answer = match (req.method, req.segments.as_slice()) {
                    (&Method::POST, ["logout"]) => {
                        if let Some(t) = &token {
                            self.sessions.end(t);
                        }
                        let mut r = redirect("/console/login");
                        set_cookie(&mut r, &session::clear_cookie());
                        return r;
                    }
                    (&Method::GET, []) => Ok(redirect("/console/vaults")),
                    (&Method::GET, ["vaults"]) => view.vaults(&req),
                    (&Method::GET, ["vaults", vault]) => view.vault(vault),
                    (&Method::GET, ["vaults", vault, "confirm-deletion"]) => view.confirm_deletion(vault, &req),
                    (&Method::POST, ["vaults", vault, "deletion"]) => view.vault_deletion(vault, &req),
                    (&Method::GET, ["vaults", vault, "import"]) => view.import_page(vault, None),
                    (&Method::POST, ["vaults", vault, "import"]) => view.import(vault, &req),
                    (&Method::GET, ["vaults", vault, "keys", key]) => view.key(vault, key, &req),
                    (&Method::GET, ["vaults", vault, "keys", key, "confirm"]) => view.confirm(vault, key, &req),
                    (&Method::POST, ["vaults", vault, "keys", key, action @ ("rotate" | "enable" | "disable")]) => {
                        view.key_action(vault, key, action, &req)
                    }
                    (&Method::GET, ["compliance"]) => view.compliance(&req),
                    (&Method::GET, ["audit"]) => view.audit(&req),
                    (&Method::GET, _) | (&Method::POST, _) => Err(ApiError::not_found("page")),
                    _ => return not_allowed(),
                };
                answer.unwrap_or_else(|e| view.error(&e))
            }
        }
    }

    fn login(&self, api: &KmsApi, req: &Request<'_>) -> Response {
        let name = req.form.get("username").map(String::as_str).unwrap_or("");
        let password = req.form.get("password").map(String::as_str).unwrap_or("");
        if !session::sign_in_ok(req.headers, req.form.get("signin").map(String::as_str)) {
            audit_sign_in(
                api,
                req,
                None,
                name,
                "the sign-in form did not come from this console (no or wrong sign-in token)".into(),
            );
            return login_page(
                api,
                req,
                StatusCode::FORBIDDEN,
                Some("This sign-in form did not come from this console. Sign in again from this page."),
            );
        }
        let from = client_ip(&req.source);
        if let Err(wait) = self.source_throttle.check(&from) {
            tracing::warn!(source = %from, "console sign-in refused: too many failures from this address");
            audit_sign_in(
                api,
                req,
                None,
                name,
                format!("locked out: too many failed sign-ins from this address; {wait} s to wait"),
            );
            return login_page(
                api,
                req,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins from your address; try again in {wait} seconds."
                )),
            );
        }
        if let Err(wait) = self.throttle.check(name) {
            tracing::warn!(user = %name, "console sign-in refused: too many failures");
            let user = api
                .kms()
                .list_users()
                .ok()
                .and_then(|u| u.into_iter().find(|u| u.name == name));
            audit_sign_in(
                api,
                req,
                user.map(|u| u.id),
                name,
                format!("locked out: too many failed sign-ins for this user name; {wait} s to wait"),
            );
            return login_page(
                api,
                req,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins for this user name; try again in {wait} seconds."
                )),
            );
        }
        let user = api
            .kms()
            .list_users()
            .ok()
            .and_then(|users| users.into_iter().find(|u| u.name == name));
        // The same work and the same answer whether the user exists or not.
        let stored = user
            .as_ref()
            .and_then(|u| api.kms().console_password(&u.id).ok().flatten());
        let ok = password::verify(password, stored.as_deref().unwrap_or(DUMMY_HASH)) && stored.is_some();
        match user {
            Some(user) if ok => {
                tracing::info!(user = %user.name, "console sign-in");
                self.throttle.succeeded(name);
                let token = self.sessions.start(user.id, user.name);
                let mut r = redirect("/console/vaults");
                set_cookie(&mut r, &session::set_cookie(&token, api.is_tls()));
                r
            }
            _ => {
                tracing::info!(user = %name, "console sign-in refused");
                self.throttle.failed(name);
                self.source_throttle.failed(&from);
                let why = if user.is_some() {
                    "wrong password"
                } else {
                    "no such user, or no console password"
                };
                audit_sign_in(api, req, user.map(|u| u.id), name, why.to_owned());
                login_page(api, req, StatusCode::UNAUTHORIZED, Some("Wrong user name or password."))
            }
        }
    }
}

/// The address part of a request's `console <ip>:<port>` source (what per-address lockout
/// counts).
fn client_ip(source: &str) -> String {
    let addr = source.trim_start_matches("console ");
    addr.parse::<std::net::SocketAddr>()
        .map_or_else(|_| addr.to_owned(), |a| a.ip().to_string())
}

/// The sign-in page with a fresh sign-in token in its form and cookie.
fn login_page(api: &KmsApi, _req: &Request<'_>, status: StatusCode, error: Option<&str>) -> Response {
    let (token, cookie) = session::sign_in_token(api.is_tls());
    let mut r = html(status, pages::login(error, &token));
    set_cookie(&mut r, &cookie);
    r
}

/// Audits a refused console sign-in: the user it named (by id when it exists), from where,
/// why.
fn audit_sign_in(api: &KmsApi, req: &Request<'_>, user: Option<Ocid>, name: &str, reason: String) {
    let refusal = kms_core::AuditRefusal {
        principal: user.map_or_else(|| "anonymous".to_owned(), |id| id.to_string()),
        principal_name: Some(name.chars().take(128).collect()),
        source: Some(req.source.clone()),
        operation: "ConsoleSignIn".into(),
        subject: Default::default(),
        reason,
    };
    if let Err(e) = api.kms().audit_refusal(refusal) {
        tracing::error!(error = %e, "could not audit a refused sign-in");
    }
}

/// Verified against when the user does not exist, so that a wrong name costs as much as a
/// wrong password (the hash of a random string).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2VhbHN0b3JlLWR1bW15$eXpmZBqLMf2m3W2Vx7qW8yHjA6H0s4LQbpQmJkOVn1E";

/// Pages for one signed-in user: each reads through the KMS API as that user.
struct View<'a> {
    api: &'a KmsApi,
    session: &'a Session,
    caller: Caller,
}

/// A vault's keys as the vault page lists them.
pub(crate) struct KeyRow {
    /// `KeySummary` JSON.
    pub key: Value,
    /// The current version (`KeyVersion` JSON), when readable.
    pub current: Option<Value>,
}

/// A key found by the compliance check.
pub(crate) struct StaleKey {
    /// The vault (`Vault` JSON).
    pub vault: Value,
    /// The key (`Key` JSON).
    pub key: Value,
    /// The current version (`KeyVersion` JSON).
    pub current: Value,
    /// Days since the current version was created.
    pub age_days: i64,
}

impl View<'_> {
    fn call(&self, method: Method, target: &str, body: Value) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(&body).expect("JSON serializes");
        self.api
            .answer_as(&self.caller, &method, target, &body)
            .map(|(body, _)| body)
    }

    fn get(&self, target: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, target, Value::Null)
    }

    /// Every page of a list.
    fn list(&self, target: &str) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let sep = if target.contains('?') { '&' } else { '?' };
            let url = match &page {
                Some(p) => format!("{target}{sep}limit=1000&page={}", encode(p)),
                None => format!("{target}{sep}limit=1000"),
            };
            let (body, next) = self.api.answer_as(&self.caller, &Method::GET, &url, b"")?;
            items.extend(body.as_array().cloned().unwrap_or_default());
            match next {
                Some(n) => page = Some(n),
                None => return Ok(items),
            }
        }
    }

    /// The tenancy and every compartment the user can see, as `(id, name)`.
    fn compartments(&self) -> Result<Vec<(String, String)>, ApiError> {
        let tenancy = self.api.kms().tenancy_id().to_string();
        let mut out = vec![(tenancy.clone(), "root compartment (tenancy)".to_owned())];
        for c in self.list(&format!(
            "/20160918/compartments?compartmentId={}&compartmentIdInSubtree=true&accessLevel=ACCESSIBLE",
            encode(&tenancy)
        ))? {
            out.push((text(&c["id"]), text(&c["name"])));
        }
        Ok(out)
    }

    fn may_manage(&self, kind: ResourceKind, compartment: &str, vault: &str, key: Option<&str>) -> bool {
        let Ok(compartment) = crate::kms_api::compartment_ocid(compartment) else {
            return false;
        };
        self.api.allows(
            &self.caller,
            Verb::Manage,
            kind,
            &compartment,
            Target {
                vault_id: Some(vault),
                key_id: key,
            },
        )
    }

    fn vaults(&self, req: &Request<'_>) -> Result<Response, ApiError> {
        let compartments = self.compartments()?;
        let chosen = req
            .param("compartmentId")
            .map(str::to_owned)
            .unwrap_or_else(|| compartments[0].0.clone());
        let vaults = self.list(&format!("/20180608/vaults?compartmentId={}", encode(&chosen)))?;
        Ok(html(
            StatusCode::OK,
            pages::vaults(self.session, &compartments, &chosen, &vaults),
        ))
    }

    fn vault_json(&self, vault: &str) -> Result<Value, ApiError> {
        self.get(&format!("/20180608/vaults/{}", encode(vault)))
    }

    fn vault(&self, vault: &str) -> Result<Response, ApiError> {
        self.vault_page(vault, None)
    }

    /// The vault page, with `error` (and status 400) after a refused deletion request.
    fn vault_page(&self, vault: &str, error: Option<&str>) -> Result<Response, ApiError> {
        let v = self.vault_json(vault)?;
        let keys = self.list(&format!(
            "/kms/{vault}/management/20180608/keys?compartmentId={}",
            encode(&text(&v["compartmentId"]))
        ))?;
        let rows = keys
            .into_iter()
            .map(|key| {
                // The summary has neither the current version nor the shape: read the key,
                // then that version.
                match self.key_with_current(vault, &text(&key["id"])) {
                    Ok((key, current)) => KeyRow {
                        key,
                        current: Some(current),
                    },
                    Err(_) => KeyRow { key, current: None },
                }
            })
            .collect::<Vec<_>>();
        // A primary's replicas, with their status and lag.
        let replicas = if v["isPrimary"] == true {
            self.list(&format!("/20180608/vaults/{}/actions/listReplicas", encode(vault)))?
        } else {
            Vec::new()
        };
        let manage = self.may_manage(ResourceKind::Vaults, &text(&v["compartmentId"]), vault, None);
        let import = self.may_manage(ResourceKind::Keys, &text(&v["compartmentId"]), vault, None);
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Ok(html(
            status,
            pages::vault(self.session, &v, &rows, &replicas, manage, import, error),
        ))
    }

    /// The days of a deletion request, if within [`DELETION_DAYS`].
    fn deletion_days(form: &Query) -> Option<i64> {
        form.get("days")
            .and_then(|d| d.trim().parse::<i64>().ok())
            .filter(|d| DELETION_DAYS.contains(d))
    }

    fn deletion_days_error() -> String {
        format!(
            "Deletion must be scheduled {} to {} days ahead.",
            DELETION_DAYS.start(),
            DELETION_DAYS.end()
        )
    }

    fn confirm_deletion(&self, vault: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let v = self.vault_json(vault)?;
        if !self.may_manage(ResourceKind::Vaults, &text(&v["compartmentId"]), vault, None) {
            return Ok(self.read_only("vault", &v, "delete"));
        }
        let days = match req.param("action") {
            Some("schedule") => match Self::deletion_days(&req.query) {
                Some(days) => Some(days),
                None => return self.vault_page(vault, Some(&Self::deletion_days_error())),
            },
            Some("cancel") => None,
            _ => return Err(ApiError::invalid("action must be schedule or cancel")),
        };
        Ok(html(StatusCode::OK, pages::confirm_deletion(self.session, &v, days)))
    }

    fn vault_deletion(&self, vault: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let action = req.form.get("action").map(String::as_str).unwrap_or("");
        let target = format!("/20180608/vaults/{}/actions/", encode(vault));
        match action {
            "schedule" => {
                let Some(days) = Self::deletion_days(&req.form) else {
                    // Refused here, with the form shown again, before asking the API.
                    return self.vault_page(vault, Some(&Self::deletion_days_error()));
                };
                let when = chrono::Utc::now() + chrono::Duration::days(days) + chrono::Duration::minutes(1);
                let asked = self.call(
                    Method::POST,
                    &format!("{target}scheduleDeletion"),
                    json!({"timeOfDeletion": when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
                );
                if let Err(e) = asked {
                    return self.refusal(e, "vault", self.vault_json(vault), "delete");
                }
            }
            "cancel" => {
                let asked = self.call(Method::POST, &format!("{target}cancelDeletion"), json!({}));
                if let Err(e) = asked {
                    return self.refusal(e, "vault", self.vault_json(vault), "cancel the deletion of");
                }
            }
            _ => return Err(ApiError::invalid("action must be schedule or cancel")),
        }
        Ok(redirect(&format!("/console/vaults/{}", encode(vault))))
    }

    /// The import page (status 400 with `error` after a refused import).
    fn import_page(&self, vault: &str, error: Option<&str>) -> Result<Response, ApiError> {
        let v = self.vault_json(vault)?;
        let wrapping = self.get(&format!("/kms/{}/management/20180608/wrappingKeys", encode(vault)))?;
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Ok(html(status, pages::import(self.session, &v, &wrapping, error)))
    }

    /// Imports a key from the form; a refusal shows the form again with the reason.
    fn import(&self, vault: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let v = self.vault_json(vault)?;
        let field = |name: &str| req.form.get(name).map(|s| s.trim().to_owned()).unwrap_or_default();
        let shape = kms_core::KeySpec::from_name(&field("shape"))
            .unwrap_or(kms_core::KeySpec::AES_256)
            .shape();
        let material: String = field("material").split_whitespace().collect();
        let body = json!({
            "compartmentId": v["compartmentId"],
            "displayName": field("name"),
            "keyShape": shape,
            "wrappedImportKey": {"keyMaterial": material, "wrappingAlgorithm": field("algorithm")},
        });
        match self.call(
            Method::POST,
            &format!("/kms/{}/management/20180608/keys/import", encode(vault)),
            body,
        ) {
            Ok(key) => Ok(redirect(&format!(
                "/console/vaults/{}/keys/{}?done=imported",
                encode(vault),
                encode(&text(&key["id"]))
            ))),
            Err(e) if e.status == StatusCode::BAD_REQUEST => self.import_page(vault, Some(&e.message)),
            Err(e) => Err(e),
        }
    }

    fn key_json(&self, vault: &str, key: &str) -> Result<Value, ApiError> {
        self.get(&format!(
            "/kms/{}/management/20180608/keys/{}",
            encode(vault),
            encode(key)
        ))
    }

    /// A key (`Key` JSON) and its current version (`KeyVersion` JSON), as the user may read
    /// them (key summaries do not name the current version).
    fn key_with_current(&self, vault: &str, key: &str) -> Result<(Value, Value), ApiError> {
        let k = self.key_json(vault, key)?;
        let current = self.get(&format!(
            "/kms/{}/management/20180608/keys/{}/keyVersions/{}",
            encode(vault),
            encode(key),
            encode(&text(&k["currentKeyVersion"]))
        ))?;
        Ok((k, current))
    }

    fn key(&self, vault: &str, key: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let (k, current) = self.key_with_current(vault, key)?;
        let v = self.vault_json(vault)?;
        let versions = if req.param("tab") == Some("versions") {
            let list = self.list(&format!(
                "/kms/{}/management/20180608/keys/{}/keyVersions",
                encode(vault),
                encode(key)
            ))?;
            let kms = self.api.kms();
            Some(
                list.into_iter()
                    .map(|ver| {
                        let protects = Ocid::parse(kms_core::ResourceType::KeyVersion, &text(&ver["id"]))
                            .ok()
                            .and_then(|id| kms.data_protected_by(&id).ok());
                        (ver, protects)
                    })
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        let manage = self.may_manage(ResourceKind::Keys, &text(&k["compartmentId"]), vault, Some(key));
        Ok(html(
            StatusCode::OK,
            pages::key(
                self.session,
                &v,
                &k,
                Some(&current),
                versions.as_deref(),
                manage,
                done(req),
            ),
        ))
    }

    fn confirm(&self, vault: &str, key: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let action = req.param("action").unwrap_or("");
        if !matches!(action, "rotate" | "enable" | "disable") {
            return Err(ApiError::not_found(format_args!("action '{action}'")));
        }
        let k = self.key_json(vault, key)?;
        if !self.may_manage(ResourceKind::Keys, &text(&k["compartmentId"]), vault, Some(key)) {
            return Ok(self.read_only("key", &k, action));
        }
        Ok(html(
            StatusCode::OK,
            pages::confirm(self.session, vault, &k, action, req.param("return")),
        ))
    }

    /// The answer to a change the API refused: "not found" about a resource the user can read
    /// (`readable`) means they may not change it — said plainly ([`View::read_only`]); any
    /// other refusal as it is.
    fn refusal(
        &self,
        e: ApiError,
        kind: &str,
        readable: Result<Value, ApiError>,
        action: &str,
    ) -> Result<Response, ApiError> {
        match (e.status, readable) {
            (StatusCode::NOT_FOUND, Ok(resource)) => Ok(self.read_only(kind, &resource, action)),
            _ => Err(e),
        }
    }

    /// 403 for an action the user may see but not take: they may read `what` but not change
    /// it (said plainly, rather than the API's "not found" about something they can see).
    fn read_only(&self, kind: &str, resource: &Value, action: &str) -> Response {
        let manage = if kind == "vault" {
            "manage vaults"
        } else {
            "manage keys"
        };
        html(
            StatusCode::FORBIDDEN,
            pages::message(
                Some(self.session),
                "Read only",
                &format!(
                    "You may read {kind} {} but not {action} it: that needs `{manage}` in its compartment. Ask an administrator.",
                    text(&resource["displayName"])
                ),
            ),
        )
    }

    fn key_action(&self, vault: &str, key: &str, action: &str, req: &Request<'_>) -> Result<Response, ApiError> {
        let base = format!("/kms/{}/management/20180608/keys/{}", encode(vault), encode(key));
        let asked = match action {
            "rotate" => self.call(Method::POST, &format!("{base}/keyVersions"), json!({})),
            "enable" => self.call(Method::POST, &format!("{base}/actions/enable"), json!({})),
            _ => self.call(Method::POST, &format!("{base}/actions/disable"), json!({})),
        };
        if let Err(e) = asked {
            return self.refusal(e, "key", self.key_json(vault, key), action);
        }
        let done = match action {
            "rotate" => "rotated",
            "enable" => "enabled",
            _ => "disabled",
        };
        Ok(match req.form.get("return").map(String::as_str) {
            Some("compliance") => redirect(&format!("/console/compliance?done={done}")),
            _ => redirect(&format!(
                "/console/vaults/{}/keys/{}?done={done}",
                encode(vault),
                encode(key)
            )),
        })
    }

    fn compliance(&self, req: &Request<'_>) -> Result<Response, ApiError> {
        let max_age = match req.param("days") {
            None => DEFAULT_MAX_KEY_AGE_DAYS,
            Some(d) => match d.trim().parse::<i64>() {
                Ok(days @ 1..=36_500) => days,
                _ => {
                    return Ok(html(
                        StatusCode::BAD_REQUEST,
                        pages::message(
                            Some(self.session),
                            "Refused",
                            &format!("days must be a whole number of days from 1 to 36500, not '{d}'."),
                        ),
                    ))
                }
            },
        };
        let now = self.api.kms().now();
        let mut stale = Vec::new();
        for (compartment, _) in self.compartments()? {
            for vault in self.list(&format!("/20180608/vaults?compartmentId={}", encode(&compartment)))? {
                let vid = text(&vault["id"]);
                if text(&vault["lifecycleState"]) != "ACTIVE" {
                    continue;
                }
                let keys = self.list(&format!(
                    "/kms/{vid}/management/20180608/keys?compartmentId={}",
                    encode(&compartment)
                ))?;
                for summary in keys.iter().filter(|k| text(&k["lifecycleState"]) == "ENABLED") {
                    let kid = text(&summary["id"]);
                    let Ok((key, current)) = self.key_with_current(&vid, &kid) else {
                        continue;
                    };
                    let Ok(created) = kms_core::Timestamp::parse(&text(&current["timeCreated"])) else {
                        continue;
                    };
                    let age_days = now.days_since(created);
                    if age_days > max_age {
                        stale.push(StaleKey {
                            vault: vault.clone(),
                            key,
                            current,
                            age_days,
                        });
                    }
                }
            }
        }
        let manage = |s: &StaleKey| {
            self.may_manage(
                ResourceKind::Keys,
                &text(&s.key["compartmentId"]),
                &text(&s.vault["id"]),
                Some(&text(&s.key["id"])),
            )
        };
        let rows: Vec<(StaleKey, bool)> = stale
            .into_iter()
            .map(|s| {
                let m = manage(&s);
                (s, m)
            })
            .collect();
        Ok(html(
            StatusCode::OK,
            pages::compliance(self.session, max_age, &rows, done(req)),
        ))
    }

    fn audit(&self, req: &Request<'_>) -> Result<Response, ApiError> {
        const PAGE: u64 = 50;
        // The chain's length first (from the verification), to open on the newest page.
        let probe = self.get("/20180608/auditEvents?limit=1")?;
        let total = probe["verification"]["entriesChecked"].as_u64().unwrap_or(0);
        let newest_page = total.saturating_sub(PAGE - 1).max(1);
        let start = req
            .param("start")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(newest_page)
            .max(1);
        let result = req
            .param("result")
            .filter(|r| matches!(*r, "SUCCEEDED" | "FAILED" | "DENIED"));
        let page = match result {
            // One outcome only: from the first entry forward (`Next` goes on).
            Some(r) => {
                let from = req.param("start").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
                self.get(&format!("/20180608/auditEvents?result={r}&start={from}&limit={PAGE}"))?
            }
            None => self.get(&format!("/20180608/auditEvents?start={start}&limit={PAGE}"))?,
        };
        let mut entries = page["entries"].as_array().cloned().unwrap_or_default();
        // Who, by name: users' ids resolved (entries of refusals carry the name already).
        let names: std::collections::HashMap<String, String> = self
            .api
            .kms()
            .list_users()
            .unwrap_or_default()
            .into_iter()
            .map(|u| (u.id.to_string(), u.name))
            .collect();
        for e in &mut entries {
            if e["principalName"].is_null() {
                if let Some(name) = names.get(&text(&e["principal"])) {
                    e["principalName"] = Value::String(name.clone());
                }
            }
        }
        let view = pages::AuditView {
            start,
            page: PAGE,
            total,
            result,
            next_start: page["nextStart"].as_u64(),
        };
        Ok(html(
            StatusCode::OK,
            pages::audit(self.session, &entries, &page["verification"], &view),
        ))
    }

    fn error(&self, e: &ApiError) -> Response {
        let title = match e.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::CONFLICT => "Conflict",
            s if s.is_client_error() => "Refused",
            _ => "Error",
        };
        html(e.status, pages::message(Some(self.session), title, &e.message))
    }
}

/// What the action before the redirect did, from `?done=` (only the words actions use, so a
/// crafted link cannot put other text on the page).
fn done<'a>(req: &'a Request<'_>) -> Option<&'a str> {
    req.param("done")
        .filter(|d| matches!(*d, "rotated" | "enabled" | "disabled" | "imported"))
}

/// A JSON string field as text ("" when missing).
pub(crate) fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// Percent-encodes a query or path value.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn html(status: StatusCode, markup: Markup) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::from(markup.into_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

fn redirect(location: &str) -> Response {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

fn set_cookie(r: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

fn not_allowed() -> Response {
    html(
        StatusCode::METHOD_NOT_ALLOWED,
        pages::message(None, "Not allowed", "This page does not take that method."),
    )
}
