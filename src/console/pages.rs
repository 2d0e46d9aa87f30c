//! The console's HTML: semantic, readable without JavaScript or CSS, one column on a phone.
//! maud escapes every value it inserts.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use super::session::Session;
use super::{text, KeyRow, StaleKey, DELETION_DAYS};

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1a1a1a;line-height:1.4}
header{background:#21323f;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center}
header a{color:#fff}header form{margin-left:auto}
main{padding:1rem;max-width:80rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}
.scroll{overflow-x:auto}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
.ok{background:#e6f4ea;padding:.5rem}.error{background:#fce8e6;padding:.5rem}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0}
a.button,button{font:inherit;padding:.35rem .8rem;border:1px solid #21323f;border-radius:4px;background:#fff;color:#21323f;text-decoration:none;cursor:pointer}
button.primary{background:#21323f;color:#fff}
nav.tabs a{margin-right:1rem}nav.tabs a[aria-current]{font-weight:700}
code{overflow-wrap:anywhere}pre.pem{overflow-x:auto;background:#f4f4f4;padding:.5rem}
form.stack{display:grid;gap:.5rem;max-width:40rem}form.stack textarea{font-family:monospace;min-height:8rem}
@media (max-width:40rem){dl{grid-template-columns:1fr}td,th{padding:.3rem}.wide{display:none}}
nav.crumbs{margin:.5rem 0}nav.crumbs a{margin-right:.3rem}
";

/// The page frame: header with navigation and sign-out, then `body`.
fn layout(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — sealstore console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "sealstore" }
                    @if let Some(s) = session {
                        nav aria-label="main" {
                            a href="/console/vaults" { "Vaults" } " · "
                            a href="/console/compliance" { "Compliance" }
                            @if s.may_read_audit { " · " a href="/console/audit" { "Audit" } }
                        }
                        form method="post" action="/console/logout" {
                            span { "Signed in as " strong { (s.user_name) } " " }
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in form, with `error` after a refused attempt.
pub(crate) fn login(error: Option<&str>, sign_in_token: &str) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/console/login" {
                input type="hidden" name="signin" value=(sign_in_token);
                p { label for="username" { "User name" } br; input id="username" name="username" autocomplete="username" required; }
                p { label for="password" { "Password" } br; input id="password" name="password" type="password" autocomplete="current-password" required; }
                p { button.primary type="submit" { "Sign in" } }
            }
            p { "Console users are IAM users with a password: " code { "sealstore iam user set-password NAME" } "." }
        },
    )
}

/// A page with one message.
pub(crate) fn message(session: Option<&Session>, title: &str, text: &str) -> Markup {
    layout(
        session,
        title,
        html! {
            p.error role="alert" { (text) }
            p { a href="/console/vaults" { "Back to vaults" } }
        },
    )
}

/// "2026-11-30 15:09:09 UTC" from an RFC 3339 time.
fn when(v: &Value) -> String {
    let s = text(v);
    chrono::DateTime::parse_from_rfc3339(&s)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or(s)
}

/// An OCID in a table: its kind and last characters (`ocid1.keyversion…x7k2q9`), the whole
/// id in the title (and for copying, on the resource's own page); anything else as it is.
fn short_ocid(id: &str) -> Markup {
    let short = match (id.starts_with("ocid1."), id.rsplit_once('.')) {
        (true, Some((_, unique))) if unique.len() > 8 => {
            let kind = id.split('.').take(2).collect::<Vec<_>>().join(".");
            format!("{kind}…{}", &unique[unique.len() - 6..])
        }
        _ => id.to_owned(),
    };
    html! { code title=(id) { (short) } }
}

/// OCI console's "Algorithm / Length": `AES / 256 bits`, `RSA / 3072 bits`, `ECDSA / NIST_P384`.
fn algorithm_length(k: &Value) -> String {
    let shape = &k["keyShape"];
    match shape["curveId"].as_str() {
        Some(curve) => format!("{} / {curve}", text(&shape["algorithm"])),
        None => format!(
            "{} / {} bits",
            text(&shape["algorithm"]),
            shape["length"].as_u64().unwrap_or(0) * 8
        ),
    }
}

/// A key shape as people say it: `AES-256`, `RSA-3072`, `ECDSA P-384`.
fn shape(k: &Value) -> String {
    let shape = &k["keyShape"];
    if shape.is_null() {
        return text(&k["algorithm"]); // a key summary: the algorithm only
    }
    let bytes = shape["length"].as_u64().unwrap_or(0);
    match (text(&shape["algorithm"]).as_str(), shape["curveId"].as_str()) {
        ("ECDSA", Some(curve)) => format!("ECDSA {}", curve.trim_start_matches("NIST_").replace('P', "P-")),
        (algorithm, _) => format!("{algorithm}-{}", bytes * 8),
    }
}

fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// Compartment picker and the vaults of the chosen compartment.
pub(crate) fn vaults(session: &Session, compartments: &[(String, String)], chosen: &str, vaults: &[Value]) -> Markup {
    layout(
        Some(session),
        "Vaults",
        html! {
            form method="get" action="/console/vaults" {
                label for="compartment" { "Compartment " }
                select id="compartment" name="compartmentId" {
                    @for (id, name) in compartments {
                        option value=(id) selected[id == chosen] { (name) }
                    }
                }
                " "
                button type="submit" { "Show" }
            }
            @if vaults.is_empty() {
                p { "No vaults you may see in this compartment." }
            } @else {
                div.scroll tabindex="0" { table {
                    thead { tr { th { "Name" } th { "Type" } th { "State" } th { "Created" } } }
                    tbody {
                        @for v in vaults {
                            tr {
                                td { a href={ "/console/vaults/" (text(&v["id"])) } { (text(&v["displayName"])) } }
                                td { (text(&v["vaultType"])) }
                                td { (text(&v["lifecycleState"])) }
                                td { (when(&v["timeCreated"])) }
                            }
                        }
                    }
                } }
            }
        },
    )
}

/// A vault: details, replication, deletion, and its master encryption keys.
pub(crate) fn vault(
    session: &Session,
    v: &Value,
    keys: &[KeyRow],
    replicas: &[Value],
    manage: bool,
    import: bool,
    error: Option<&str>,
) -> Markup {
    let id = text(&v["id"]);
    let pending = text(&v["lifecycleState"]) == "PENDING_DELETION";
    layout(
        Some(session),
        &format!("Vault {}", text(&v["displayName"])),
        html! {
            nav.crumbs aria-label="breadcrumb" {
                a href="/console/vaults" { "Vaults" } "›"
                span aria-current="page" { (text(&v["displayName"])) }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            dl {
                dt { "OCID" } dd { code { (id) } }
                dt { "Type" } dd { (text(&v["vaultType"])) }
                dt { "State" } dd { (text(&v["lifecycleState"])) }
                dt { "Created" } dd { (when(&v["timeCreated"])) }
                @if pending { dt { "Deletion on" } dd { (when(&v["timeOfDeletion"])) } }
                dt { "Management endpoint" } dd { code { (text(&v["managementEndpoint"])) } }
                dt { "Cryptographic endpoint" } dd { code { (text(&v["cryptoEndpoint"])) } }
                @if v["isPrimary"] == false {
                    dt { "Replication" }
                    dd {
                        "A replica of the vault in region " (text(&v["replicaOf"]["primaryRegion"]))
                        " (crypto only here); last update " (when(&v["replicaOf"]["timeLastApplied"]))
                    }
                }
            }
            @if !replicas.is_empty() {
                h2 { "Replicas" }
                div.scroll tabindex="0" { table {
                    thead { tr { th { "Region" } th { "Status" } th { "Last shipped" } th { "Changes waiting" } th { "Lag" } } }
                    tbody {
                        @for r in replicas {
                            tr {
                                td { (text(&r["region"])) }
                                td { (text(&r["status"])) }
                                td { (when(&r["timeLastShipped"])) }
                                td { (r["pendingChanges"]) }
                                td { (r["lagMillis"]) " ms" }
                            }
                        }
                    }
                } }
            }
            h2 { "Master Encryption Keys" }
            @if import {
                p { a href={ "/console/vaults/" (id) "/import" } { "Import a key" } " (bring your own key material)" }
            }
            @if keys.is_empty() {
                p { "No keys you may see." }
            } @else {
                div.scroll tabindex="0" { table {
                    thead { tr { th { "Name" } th { "State" } th { "Shape" } th.wide { "Protection mode" } th.wide { "Current version" } th.wide { "Created" } th { "Last rotated" } } }
                    tbody {
                        @for row in keys {
                            tr {
                                td { a href={ "/console/vaults/" (id) "/keys/" (text(&row.key["id"])) } { (text(&row.key["displayName"])) } }
                                td { (text(&row.key["lifecycleState"])) }
                                td { (shape(&row.key)) }
                                td.wide { (text(&row.key["protectionMode"])) }
                                td.wide { @if let Some(c) = &row.current { (short_ocid(&text(&c["id"]))) } }
                                td.wide { (when(&row.key["timeCreated"])) }
                                td { @if let Some(c) = &row.current { (when(&c["timeCreated"])) } }
                            }
                        }
                    }
                } }
            }
            @if manage {
                section aria-labelledby="deletion" {
                    h2 id="deletion" { "Deletion" }
                    @if pending {
                        form method="get" action={ "/console/vaults/" (id) "/confirm-deletion" } {
                            input type="hidden" name="action" value="cancel";
                            button type="submit" { "Cancel deletion" }
                        }
                    } @else {
                        form method="get" action={ "/console/vaults/" (id) "/confirm-deletion" } {
                            input type="hidden" name="action" value="schedule";
                            label for="days" { "Delete in (days, " (DELETION_DAYS.start()) "–" (DELETION_DAYS.end()) ") " }
                            input id="days" name="days" type="number" min=(DELETION_DAYS.start()) max=(DELETION_DAYS.end()) value="30" required;
                            " "
                            button type="submit" { "Schedule deletion" }
                        }
                    }
                }
            }
        },
    )
}

/// A key: Key Information (as OCI's console labels it) or Versions.
pub(crate) fn key(
    session: &Session,
    vault: &Value,
    k: &Value,
    current: Option<&Value>,
    versions: Option<&[(Value, Option<u64>)]>,
    manage: bool,
    done: Option<&str>,
) -> Markup {
    let vid = text(&vault["id"]);
    let kid = text(&k["id"]);
    let base = format!("/console/vaults/{vid}/keys/{kid}");
    let enabled = text(&k["lifecycleState"]) == "ENABLED";
    layout(
        Some(session),
        &format!("Key {}", text(&k["displayName"])),
        html! {
            nav.crumbs aria-label="breadcrumb" {
                a href="/console/vaults" { "Vaults" } "›"
                a href={ "/console/vaults/" (vid) } { (text(&vault["displayName"])) } "›"
                span aria-current="page" { (text(&k["displayName"])) }
            }
            @if let Some(d) = done { p.ok role="status" { "Key " (d) "." } }
            @if manage {
                div.actions {
                    a.button href={ (base) "/confirm?action=rotate" } { "Rotate Key" }
                    @if enabled {
                        a.button href={ (base) "/confirm?action=disable" } { "Disable Key" }
                    } @else {
                        a.button href={ (base) "/confirm?action=enable" } { "Enable Key" }
                    }
                }
            }
            nav.tabs aria-label="key" {
                a href=(base) aria-current=[versions.is_none().then_some("page")] { "Key Information" }
                a href={ (base) "?tab=versions" } aria-current=[versions.is_some().then_some("page")] { "Versions" }
            }
            @match versions {
                None => {
                    h2 { "Key Information" }
                    dl {
                        dt { "Name" } dd { (text(&k["displayName"])) }
                        dt { "OCID" } dd { code { (kid) } }
                        dt { "State" } dd { (text(&k["lifecycleState"])) }
                        @if !k["timeOfDeletion"].is_null() { dt { "Deletion on" } dd { (when(&k["timeOfDeletion"])) } }
                        dt { "Protection Mode" } dd { (text(&k["protectionMode"])) }
                        dt { "Algorithm / Length" } dd { (algorithm_length(k)) }
                        dt { "Shape" } dd { (shape(k)) }
                        dt { "Current Key Version" } dd { code { (text(&k["currentKeyVersion"])) } }
                        @if let Some(c) = current {
                            dt { "Current version origin" }
                            dd { @if text(&c["origin"]) == "EXTERNAL" { "Imported (EXTERNAL)" } @else { "Generated (INTERNAL)" } }
                        }
                        dt { "Created" } dd { (when(&k["timeCreated"])) }
                        dt { "Auto-rotation" }
                        dd {
                            @if k["isAutoRotationEnabled"] == true {
                                "Enabled, every " (k["autoKeyRotationDetails"]["rotationIntervalInDays"]) " days"
                            } @else { "Disabled" }
                        }
                        @if k["isAutoRotationEnabled"] == true {
                            dt { "Time of next rotation" } dd { (when(&k["autoKeyRotationDetails"]["timeOfNextRotation"])) }
                            @if !k["autoKeyRotationDetails"]["timeOfLastRotation"].is_null() {
                                dt { "Last rotation" }
                                dd {
                                    (when(&k["autoKeyRotationDetails"]["timeOfLastRotation"])) " "
                                    (text(&k["autoKeyRotationDetails"]["lastRotationStatus"]))
                                }
                            }
                        }
                        dt { "Compartment" } dd { code { (text(&k["compartmentId"])) } }
                        @if let Some(ext) = k["externalKeyReferenceDetails"]["externalKeyId"].as_str() {
                            dt { "External key" } dd { code { (ext) } }
                        }
                        @if let Some(from) = k["restoredFromKeyId"].as_str() {
                            dt { "Restored from" } dd { code { (from) } }
                        }
                        @if k["isPrimary"] == false { dt { "Replication" } dd { "A replica (managed in its primary region)" } }
                        dt { "Tags" }
                        dd {
                            @match k["freeformTags"].as_object().filter(|t| !t.is_empty()) {
                                Some(tags) => { @for (name, value) in tags { code { (name) " = " (value.as_str().unwrap_or_default()) } " " } }
                                None => "None",
                            }
                        }
                    }
                    @if let Some(pem) = current.and_then(|c| c["publicKey"].as_str()) {
                        h2 { "Public key (current version)" }
                        p { "Verify this key's signatures, or encrypt for it, with this SubjectPublicKeyInfo PEM:" }
                        pre.pem tabindex="0" { (pem) }
                    }
                }
                Some(versions) => {
                    h2 { "Versions" }
                    div.scroll tabindex="0" { table {
                        thead { tr { th { "Version" } th { "State" } th { "Origin" } th { "Created" } th { "Current" } th { "Objects and volumes it protects" } } }
                        tbody {
                            @for (ver, protects) in versions {
                                tr {
                                    td { (short_ocid(&text(&ver["id"]))) }
                                    td { (text(&ver["lifecycleState"])) }
                                    td { (text(&ver["origin"])) }
                                    td { (when(&ver["timeCreated"])) }
                                    td { @if text(&ver["id"]) == text(&k["currentKeyVersion"]) { "current" } }
                                    td { @match protects { Some(n) => (n), None => "—" } }
                                }
                            }
                        }
                    } }
                }
            }
        },
    )
}

/// Import a key (bring your own key): the vault's wrapping key, and the form.
pub(crate) fn import(session: &Session, vault: &Value, wrapping: &Value, error: Option<&str>) -> Markup {
    let vid = text(&vault["id"]);
    // The form's value is the short name (`ECDSA-P256`); its label reads `ECDSA P-256`.
    let shapes = kms_core::KeySpec::ALL.map(|spec| {
        let name = spec.name();
        let label = name.replace("ECDSA-P", "ECDSA P-");
        (name, label)
    });
    layout(
        Some(session),
        &format!("Import a key into {}", text(&vault["displayName"])),
        html! {
            nav.crumbs aria-label="breadcrumb" {
                a href="/console/vaults" { "Vaults" } "›"
                a href={ "/console/vaults/" (vid) } { (text(&vault["displayName"])) } "›"
                span aria-current="page" { "Import a key" }
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            p {
                "Wrap your key material under this vault's wrapping key (RSA-4096) on your own machine, "
                "then paste the wrapped bytes in base64 below. The material is unwrapped only inside the server. "
                "AES keys are their raw bytes; RSA and ECDSA keys are unencrypted PKCS#8 DER. "
                "RSA_OAEP_AES_SHA256 wraps any key; RSA_OAEP_SHA256 only AES keys. "
                "Or let the command line wrap it: " code { "sealstore kms key import --vault " (vid) " --name NAME --shape SHAPE --material FILE" } "."
            }
            h2 { "Wrapping key" }
            p { "OCID " code { (text(&wrapping["id"])) } }
            pre.pem tabindex="0" { (text(&wrapping["publicKey"])) }
            h2 { "Key" }
            form.stack method="post" action={ "/console/vaults/" (vid) "/import" } {
                (csrf(session))
                label for="name" { "Name" }
                input id="name" name="name" required maxlength="255";
                label for="shape" { "Shape" }
                select id="shape" name="shape" {
                    @for (value, label) in shapes { option value=(value) { (label) } }
                }
                label for="algorithm" { "Wrapping algorithm" }
                select id="algorithm" name="algorithm" {
                    option value="RSA_OAEP_AES_SHA256" { "RSA_OAEP_AES_SHA256" }
                    option value="RSA_OAEP_SHA256" { "RSA_OAEP_SHA256" }
                }
                label for="material" { "Wrapped key material (base64)" }
                textarea id="material" name="material" required {}
                div.actions {
                    button.primary type="submit" { "Import Key" }
                    a.button href={ "/console/vaults/" (vid) } { "Cancel" }
                }
            }
        },
    )
}

/// Asks before an action on a key.
pub(crate) fn confirm(session: &Session, vault: &str, k: &Value, action: &str, back: Option<&str>) -> Markup {
    let kid = text(&k["id"]);
    let (verb, explain) = match action {
        "rotate" => (
            "Rotate Key",
            "A new key version becomes current: new data is encrypted with it; older versions keep decrypting.",
        ),
        "disable" => (
            "Disable Key",
            "Nothing can be encrypted or decrypted with this key until it is enabled again.",
        ),
        _ => ("Enable Key", "The key can be used again."),
    };
    let cancel = match back {
        Some("compliance") => "/console/compliance".to_owned(),
        _ => format!("/console/vaults/{vault}/keys/{kid}"),
    };
    layout(
        Some(session),
        &format!("{verb}: {}?", text(&k["displayName"])),
        html! {
            p { (explain) }
            form method="post" action={ "/console/vaults/" (vault) "/keys/" (kid) "/" (action) } {
                (csrf(session))
                @if let Some(b) = back { input type="hidden" name="return" value=(b); }
                div.actions {
                    button.primary type="submit" { (verb) }
                    a.button href=(cancel) { "Cancel" }
                }
            }
        },
    )
}

/// Enabled keys whose current version is older than `max_age` days.
pub(crate) fn compliance(session: &Session, max_age: i64, rows: &[(StaleKey, bool)], done: Option<&str>) -> Markup {
    layout(
        Some(session),
        "Compliance: key rotation",
        html! {
            @if let Some(d) = done { p.ok role="status" { "Key " (d) "." } }
            form method="get" action="/console/compliance" {
                label for="days" { "Current version older than (days) " }
                input id="days" name="days" type="number" min="1" value=(max_age);
                " "
                button type="submit" { "Check" }
            }
            @if rows.is_empty() {
                p.ok { "Every enabled key you may see was rotated in the last " (max_age) " days." }
            } @else {
                p { (rows.len()) " enabled key(s) not rotated in the last " (max_age) " days:" }
                div.scroll tabindex="0" { table {
                    thead { tr { th { "Key" } th { "Vault" } th { "Current version created" } th { "Age (days)" } th { "" } } }
                    tbody {
                        @for (s, manage) in rows {
                            @let vid = text(&s.vault["id"]);
                            @let kid = text(&s.key["id"]);
                            tr {
                                td { a href={ "/console/vaults/" (vid) "/keys/" (kid) } { (text(&s.key["displayName"])) } }
                                td { (text(&s.vault["displayName"])) }
                                td { (when(&s.current["timeCreated"])) }
                                td { (s.age_days) }
                                td { @if *manage { a.button href={ "/console/vaults/" (vid) "/keys/" (kid) "/confirm?action=rotate&return=compliance" } { "Rotate" } } }
                            }
                        }
                    }
                } }
            }
        },
    )
}

/// Which part of the audit log a page shows.
pub(crate) struct AuditView<'a> {
    /// First entry of an unfiltered page.
    pub start: u64,
    /// Entries per page.
    pub page: u64,
    /// Entries in the chain.
    pub total: u64,
    /// Only entries of this outcome (SUCCEEDED, FAILED, DENIED).
    pub result: Option<&'a str>,
    /// Filtered: where the next page starts.
    pub next_start: Option<u64>,
}

/// A page of the audit log, newest last, and whether the hash chain verifies; links to show
/// one outcome only (DENIED: refused calls and sign-ins, with who by name and from where).
pub(crate) fn audit(session: &Session, entries: &[Value], verification: &Value, view: &AuditView<'_>) -> Markup {
    let intact = verification["failure"].is_null();
    let (start, page, total) = (view.start, view.page, view.total);
    layout(
        Some(session),
        "Audit log",
        html! {
            @if intact {
                p.ok role="status" {
                    "The hash chain verifies: " (verification["entriesChecked"]) " entries, head "
                    code { (text(&verification["headHash"])) } "."
                }
            } @else {
                p.error role="alert" {
                    "The hash chain does NOT verify: " (text(&verification["failure"]))
                    " (" (verification["entriesChecked"]) " entries checked)."
                }
            }
            nav aria-label="outcome" {
                "Show: "
                @for (label, value) in [("All", None), ("Succeeded", Some("SUCCEEDED")), ("Failed", Some("FAILED")), ("Denied", Some("DENIED"))] {
                    @let href = match value { Some(v) => format!("/console/audit?result={v}"), None => "/console/audit".to_owned() };
                    a href=(href) aria-current=[(view.result == value).then_some("page")] { (label) } " "
                }
            }
            nav aria-label="pages" {
                @if let Some(r) = view.result {
                    @if let Some(next) = view.next_start {
                        a href={ "/console/audit?result=" (r) "&start=" (next) } { "Next" }
                    }
                } @else {
                    @if start > 1 {
                        a href={ "/console/audit?start=" (start.saturating_sub(page).max(1)) } { "Older" } " "
                    }
                    @if start + page <= total {
                        a href={ "/console/audit?start=" (start + page) } { "Newer" }
                    }
                }
            }
            div.scroll tabindex="0" { table {
                thead { tr { th { "#" } th { "Time" } th { "Who" } th { "From" } th { "Operation" } th { "On" } th { "Result" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (e["seq"]) }
                            td { (when(&e["time"])) }
                            td {
                                @if let Some(name) = e["principalName"].as_str() { (name) br; }
                                (short_ocid(&text(&e["principal"])))
                            }
                            td { (text(&e["source"])) }
                            td { (text(&e["operation"])) }
                            td {
                                @for id in ["keyVersionId", "keyId", "vaultId"] {
                                    @if let Some(v) = e[id].as_str() { (short_ocid(v)) br; }
                                }
                                @if let Some(r) = e["resource"].as_str() { (r) }
                            }
                            td { (text(&e["result"])) @if let Some(m) = e["message"].as_str() { ": " (m) } }
                        }
                    }
                }
            } }
        },
    )
}

/// Asks before scheduling (`days`) or cancelling (`None`) a vault's deletion.
pub(crate) fn confirm_deletion(session: &Session, v: &Value, days: Option<i64>) -> Markup {
    let id = text(&v["id"]);
    let name = text(&v["displayName"]);
    let (title, explain, verb) = match days {
        Some(days) => (
            format!("Schedule deletion of vault {name}?"),
            format!(
                "In {days} days the vault and all its keys are destroyed; data they encrypt can no longer be \
                 decrypted. From now on its keys cannot be used. Until then the deletion can be cancelled."
            ),
            "Schedule deletion",
        ),
        None => (
            format!("Cancel the deletion of vault {name}?"),
            "The vault and its keys stay; its keys can be used again.".to_owned(),
            "Cancel deletion",
        ),
    };
    layout(
        Some(session),
        &title,
        html! {
            p { (explain) }
            form method="post" action={ "/console/vaults/" (id) "/deletion" } {
                (csrf(session))
                @match days {
                    Some(d) => {
                        input type="hidden" name="action" value="schedule";
                        input type="hidden" name="days" value=(d);
                    }
                    None => { input type="hidden" name="action" value="cancel"; }
                }
                div.actions {
                    button.primary type="submit" { (verb) }
                    a.button href={ "/console/vaults/" (id) } { "Back" }
                }
            }
        },
    )
}
