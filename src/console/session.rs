//! Console sign-in sessions: an unguessable token in an HttpOnly, SameSite=Strict cookie,
//! a CSRF token that every form carries back, and expiry (idle and absolute). Sessions live
//! in memory: a restart signs everyone out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use kms_core::Ocid;

/// The cookie holding the session token.
pub(crate) const COOKIE: &str = "sealstore_console";
/// A session unused this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);

/// A signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The IAM user's id: every action is checked against its policies.
    pub user_id: Ocid,
    /// The user's name, shown in the page header.
    pub user_name: String,
    /// The token every form of this session carries in a hidden field.
    pub csrf: String,
    /// Whether the user may read the audit log: decided again for each request (policies
    /// change), so the header shows the Audit link only to them.
    pub may_read_audit: bool,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of one server.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random source");
    data_encoding::HEXLOWER.encode(&bytes)
}

impl Sessions {
    /// Starts a session for `user_id`; returns its token (the cookie's value).
    pub(crate) fn start(&self, user_id: Ocid, user_name: String) -> String {
        let token = random_token();
        let now = Instant::now();
        let session = Session {
            user_id,
            user_name,
            csrf: random_token(),
            may_read_audit: false,
            started: now,
            last_seen: now,
        };
        let mut map = self.by_token.lock().expect("sessions poisoned");
        map.retain(|_, s| !expired(s, now));
        map.insert(token.clone(), session);
        token
    }

    /// The live session of `token`, marked as used now; `None` if unknown or expired (an
    /// expired one is forgotten).
    pub(crate) fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.by_token.lock().expect("sessions poisoned");
        let session = map.get_mut(token)?;
        if expired(session, now) {
            map.remove(token);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session of `token`.
    pub(crate) fn end(&self, token: &str) {
        self.by_token.lock().expect("sessions poisoned").remove(token);
    }
}

fn expired(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) > IDLE || now.duration_since(s.started) > ABSOLUTE
}

/// Failed sign-ins in a row after which a user name is refused for [`LOCKOUT`].
pub(crate) const MAX_FAILURES: u32 = 5;
/// How long a user name is refused after [`MAX_FAILURES`] failed sign-ins.
pub(crate) const LOCKOUT: Duration = Duration::from_secs(60);
/// Failed sign-ins from one client address (any user names) after which it is refused for
/// [`LOCKOUT`]: a guesser spraying many names from one place.
pub(crate) const MAX_FAILURES_PER_SOURCE: u32 = 20;
/// Names remembered before old entries are dropped (the map must not grow without bound).
const MAX_TRACKED: usize = 10_000;

/// Failed sign-ins per user name, so that a password guesser gets a few tries a minute, not
/// thousands. Any name is tracked, existing or not, so a lockout tells nothing about users.
/// With a file ([`SignInThrottle::persistent`]), the counts outlive a restart of the server.
#[derive(Debug)]
pub(crate) struct SignInThrottle {
    failures: Mutex<HashMap<String, (u32, SystemTime)>>,
    max: u32,
    file: Option<PathBuf>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle::with_max(MAX_FAILURES)
    }
}

/// Time since `t`; a clock set back counts as no time (the lockout runs in full).
fn since(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO)
}

impl SignInThrottle {
    /// A throttle that locks a key out after `max` failures in a row, in memory.
    pub(crate) fn with_max(max: u32) -> Self {
        SignInThrottle {
            failures: Mutex::new(HashMap::new()),
            max,
            file: None,
        }
    }

    /// A throttle that keeps its counts in `file` (read now, replaced atomically on each
    /// change), so that restarting the server does not lift a lockout. A missing or
    /// unreadable file starts empty (logged).
    pub(crate) fn persistent(max: u32, file: PathBuf) -> Self {
        let mut failures = HashMap::new();
        match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<Vec<(String, u32, u64)>>(&bytes) {
                Ok(entries) => {
                    for (name, count, unix_secs) in entries {
                        let last = SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs);
                        if since(last) < LOCKOUT {
                            failures.insert(name, (count, last));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unreadable sign-in failure counts")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot read sign-in failure counts"),
        }
        SignInThrottle {
            failures: Mutex::new(failures),
            max,
            file: Some(file),
        }
    }

    /// `Ok` when `name` may try now; otherwise the seconds to wait.
    pub(crate) fn check(&self, name: &str) -> Result<(), u64> {
        let map = self.failures.lock().expect("throttle poisoned");
        match map.get(name) {
            Some((count, last)) if *count >= self.max && since(*last) < LOCKOUT => {
                Err(LOCKOUT.saturating_sub(since(*last)).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Records a failed sign-in of `name`.
    pub(crate) fn failed(&self, name: &str) {
        let mut map = self.failures.lock().expect("throttle poisoned");
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, last)| since(*last) < LOCKOUT);
        }
        let now = SystemTime::now();
        let entry = map.entry(name.to_owned()).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
        self.save(&map);
    }

    /// Forgets the failures of `name` (it signed in).
    pub(crate) fn succeeded(&self, name: &str) {
        let mut map = self.failures.lock().expect("throttle poisoned");
        if map.remove(name).is_some() {
            self.save(&map);
        }
    }

    /// Writes the counts still in force to the file, if any (under the lock, so writes
    /// happen in order). A failure is logged: sign-ins go on, counted in memory.
    fn save(&self, map: &HashMap<String, (u32, SystemTime)>) {
        let Some(file) = &self.file else { return };
        let entries: Vec<(&str, u32, u64)> = map
            .iter()
            .filter(|(_, (_, last))| since(*last) < LOCKOUT)
            .map(|(name, (count, last))| {
                let unix_secs = last.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                (name.as_str(), *count, unix_secs)
            })
            .collect();
        if let Err(e) = crate::json_file::write_atomically(file, &serde_json::json!(entries)) {
            tracing::warn!(file = %file.display(), error = %e, "cannot save sign-in failure counts");
        }
    }
}

/// The session token in a request's `Cookie` headers.
pub(crate) fn token_of(headers: &http::HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// The value of cookie `name`.
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for a new session (`secure` over TLS).
pub(crate) fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ABSOLUTE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The cookie of the sign-in form's token (login CSRF: a sign-in POST must carry, in its
/// `signin` field, the value of this cookie, which only a page of this console can have set).
pub(crate) const SIGN_IN_COOKIE: &str = "sealstore_signin";

/// A fresh sign-in token and its `Set-Cookie` (`secure` over TLS).
pub(crate) fn sign_in_token(secure: bool) -> (String, String) {
    let token = random_token();
    let cookie = format!(
        "{SIGN_IN_COOKIE}={token}; Path=/console/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        if secure { "; Secure" } else { "" }
    );
    (token, cookie)
}

/// The sign-in token of the request's cookie.
pub(crate) fn sign_in_token_of(headers: &http::HeaderMap) -> Option<String> {
    cookie(headers, SIGN_IN_COOKIE)
}

/// Whether a sign-in form's `signin` field matches the request's sign-in cookie (in constant
/// time).
pub(crate) fn sign_in_ok(headers: &http::HeaderMap, submitted: Option<&str>) -> bool {
    match (sign_in_token_of(headers), submitted) {
        (Some(cookie), Some(field)) if !cookie.is_empty() => {
            aws_lc_rs::constant_time::verify_slices_are_equal(cookie.as_bytes(), field.as_bytes()).is_ok()
        }
        _ => false,
    }
}

/// Whether a form's CSRF field matches the session's (in constant time).
pub(crate) fn csrf_ok(session: &Session, submitted: Option<&str>) -> bool {
    submitted.is_some_and(|s| {
        aws_lc_rs::constant_time::verify_slices_are_equal(s.as_bytes(), session.csrf.as_bytes()).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_core::ResourceType;

    #[test]
    fn sessions_start_end_and_check_csrf() {
        let sessions = Sessions::default();
        let user = Ocid::generate(ResourceType::User, "local-1");
        let token = sessions.start(user.clone(), "alice".into());
        let s = sessions.get(&token).unwrap();
        assert_eq!(s.user_id, user);
        assert!(csrf_ok(&s, Some(&s.csrf.clone())));
        assert!(!csrf_ok(&s, Some("forged")));
        assert!(!csrf_ok(&s, None));
        assert!(sessions.get("not-a-token").is_none());
        sessions.end(&token);
        assert!(sessions.get(&token).is_none());
    }

    #[test]
    fn sessions_expire_when_idle_and_when_old() {
        let now = Instant::now();
        let (Some(idle_ago), Some(old)) = (
            now.checked_sub(IDLE + Duration::from_secs(1)),
            now.checked_sub(ABSOLUTE),
        ) else {
            return; // a machine up for less than 8 hours cannot go back that far
        };
        let session = |started, last_seen| Session {
            user_id: Ocid::generate(ResourceType::User, "local-1"),
            user_name: "a".into(),
            csrf: "c".into(),
            may_read_audit: false,
            started,
            last_seen,
        };
        assert!(!expired(&session(now, now), now));
        assert!(expired(&session(idle_ago, idle_ago), now));
        let old = old.checked_sub(Duration::from_secs(1)).unwrap_or(old);
        assert!(
            expired(&session(old, now), now),
            "used a second ago, but signed in 8 hours ago"
        );
    }

    #[test]
    fn a_name_is_refused_after_five_failures_until_a_success_or_the_lockout_ends() {
        let throttle = SignInThrottle::default();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed("alice");
        }
        assert!(throttle.check("alice").is_ok());
        throttle.failed("alice");
        let wait = throttle.check("alice").unwrap_err();
        assert!((1..=LOCKOUT.as_secs()).contains(&wait), "{wait}");
        assert!(throttle.check("bob").is_ok(), "other names are not affected");
        throttle.succeeded("alice");
        assert!(throttle.check("alice").is_ok());
    }

    #[test]
    fn a_persistent_throttle_keeps_a_lockout_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("failures.json");
        {
            let throttle = SignInThrottle::persistent(MAX_FAILURES, file.clone());
            for name in ["alice", "alice", "alice", "alice", "alice", "bob"] {
                throttle.failed(name);
            }
            assert!(throttle.check("alice").is_err());
        }
        let restarted = SignInThrottle::persistent(MAX_FAILURES, file.clone());
        assert!(restarted.check("alice").is_err(), "the lockout survives");
        restarted.failed("bob");
        restarted.succeeded("alice");
        let again = SignInThrottle::persistent(MAX_FAILURES, file.clone());
        assert!(again.check("alice").is_ok(), "so does the success that lifted it");
        // bob's two failures are remembered: three more lock him out.
        for _ in 0..3 {
            again.failed("bob");
        }
        assert!(again.check("bob").is_err());
        // A damaged file starts empty rather than refusing to start.
        std::fs::write(&file, b"not json").unwrap();
        assert!(SignInThrottle::persistent(MAX_FAILURES, file).check("bob").is_ok());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_strictly() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, "a=1; sealstore_console=abc; b=2".parse().unwrap());
        assert_eq!(token_of(&headers).as_deref(), Some("abc"));
        let cookie = set_cookie("abc", false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
