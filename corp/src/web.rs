//! The registration form and account pages the paper promises ("the first XenoCorp will provide
//! a simple web-based form for performing registration"), served over HTTPS by the corp itself.
//! Server-rendered HTML; a little optional JavaScript generates the key pair in the browser, so
//! the private key never leaves the user's machine. Registration answers with a private link to
//! the account page (an HMAC of the account id under a secret only the corp holds).

use crate::core::{AccountView, AuditPage, ClientRegistration, ServerRegistration};
use crate::model::{MachineSpec, Privacy};
use crate::writer::Writer;
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use ring::hmac;
use serde::Deserialize;
use std::fmt::Write;
use std::net::SocketAddr;
use xeno_schemas::Document;
use xeno_schemas::documents::{UsageRecord, format_minor};

/// Largest form accepted: a CSR and a few text fields.
const FORM_BYTES_MAX: usize = 64 * 1024;

#[derive(Clone)]
struct WebState {
    writer: Writer,
    key: hmac::Key,
    ca_pem: String,
}

/// The HTTPS server for the web pages.
pub struct WebServer {
    listener: std::net::TcpListener,
    config: axum_server::tls_rustls::RustlsConfig,
    router: Router,
}

impl WebServer {
    /// Binds `address` with the corp's TLS certificate. `secret` keys the account page links
    /// (kept in the data directory, so links survive restarts).
    pub async fn bind(
        address: SocketAddr,
        writer: Writer,
        tls: (&str, &str),
        ca_pem: &str,
        secret: &[u8],
    ) -> anyhow::Result<WebServer> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (certificate_pem, key_pem) = tls;
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            certificate_pem.as_bytes().to_vec(),
            key_pem.as_bytes().to_vec(),
        )
        .await
        .context("web TLS configuration")?;
        let state = WebState {
            writer,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ca_pem: ca_pem.to_owned(),
        };
        let router = Router::new()
            .route("/", get(index))
            .route("/ca.pem", get(ca_certificate))
            .route("/register/client", get(client_form).post(register_client))
            .route("/register/server", get(server_form).post(register_server))
            .route("/account/{account}/{token}", get(account_page))
            .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
            .with_state(state);
        let listener =
            std::net::TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
        listener.set_nonblocking(true)?;
        Ok(WebServer {
            listener,
            config,
            router,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `stop` completes.
    pub async fn serve(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            stop.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(1)));
        });
        axum_server::from_tcp_rustls(self.listener, self.config)?
            .handle(handle)
            .serve(self.router.into_make_service())
            .await
            .context("web server")
    }
}

/// The account page token: proves the holder received it at registration.
fn token(key: &hmac::Key, account_id: &str) -> String {
    hex::encode(hmac::sign(key, account_id.as_bytes()).as_ref())
}

/// `text` as HTML: markup characters as entities, and characters that could disguise the text
/// around them (controls, bidirectional overrides) written out as `\u{…}`.
fn escape(text: &str) -> String {
    let text = xeno_schemas::text::escape_for_display(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · XenoCorp</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}\
         label{{display:block;margin:.6em 0 .2em}}input[type=text],textarea{{width:100%}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         .error{{color:#a00}}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    ))
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        page(
            "Registration refused",
            &format!(
                "<p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
                escape(message)
            ),
        ),
    )
        .into_response()
}

async fn index() -> Html<String> {
    page(
        "XenoCorp",
        "<p>A XenoCorp is the trusted third party of the XenoServer Open Platform: it registers clients \
         and servers, issues purchase orders, and settles what servers charge.</p><ul>\
         <li><a href=\"/register/client\" id=\"register-client\">Register as a client</a></li>\
         <li><a href=\"/register/server\" id=\"register-server\">Register a XenoServer</a></li>\
         <li><a href=\"/ca.pem\">This corp's CA certificate</a></li></ul>",
    )
}

async fn ca_certificate(State(state): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_pem,
    )
        .into_response()
}

/// Generates a P-256 key and a PKCS#10 request with WebCrypto, filling the CSR field and offering
/// the private key as a download. Nothing about the key is sent to the corp but the request.
const KEYGEN_SCRIPT: &str = r#"<script>
function derLen(n){if(n<128)return[n];const b=[];while(n>0){b.unshift(n&255);n>>=8}return[128|b.length,...b]}
function der(tag,bytes){return[tag,...derLen(bytes.length),...bytes]}
function seq(...parts){return der(0x30,parts.flat())}
function oid(s){const p=s.split('.').map(Number);const out=[40*p[0]+p[1]];for(const v of p.slice(2)){const b=[v&127];let x=v>>7;while(x>0){b.unshift(128|(x&127));x>>=7}out.push(...b)}return der(6,out)}
function utf8(s){return der(12,[...new TextEncoder().encode(s)])}
function intBytes(b){b=[...b];while(b.length>1&&b[0]===0&&b[1]<128)b.shift();if(b[0]>=128)b.unshift(0);return der(2,b)}
function b64(bytes){let s='';for(const x of bytes)s+=String.fromCharCode(x);return btoa(s).replace(/(.{64})/g,'$1\n')}
async function makeCsr(){
  const name=document.getElementById('name').value||'xenoserve user';
  const keys=await crypto.subtle.generateKey({name:'ECDSA',namedCurve:'P-256'},true,['sign','verify']);
  const spki=[...new Uint8Array(await crypto.subtle.exportKey('spki',keys.publicKey))];
  const subject=seq(der(0x31,seq(oid('2.5.4.3'),utf8(name))));
  const info=seq(der(2,[0]),subject,spki,[0xa0,0]);
  const raw=new Uint8Array(await crypto.subtle.sign({name:'ECDSA',hash:'SHA-256'},keys.privateKey,new Uint8Array(info)));
  const sig=seq(intBytes(raw.slice(0,32)),intBytes(raw.slice(32)));
  const csr=seq(info,seq(oid('1.2.840.10045.4.3.2')),der(3,[0,...sig]));
  document.getElementById('csr').value='-----BEGIN CERTIFICATE REQUEST-----\n'+b64(csr)+'\n-----END CERTIFICATE REQUEST-----\n';
  const pkcs8=new Uint8Array(await crypto.subtle.exportKey('pkcs8',keys.privateKey));
  const pem='-----BEGIN PRIVATE KEY-----\n'+b64(pkcs8)+'\n-----END PRIVATE KEY-----\n';
  const link=document.getElementById('key-download');
  link.href='data:application/x-pem-file;base64,'+btoa(pem);link.style.display='inline';
}
</script>"#;

fn csr_field() -> String {
    format!(
        "<label for=\"csr\">Certificate signing request (PEM). Your private key stays with you: create the request with \
         <code>xeno register</code>, with <code>openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout key.pem -subj /CN=me</code>, or in this browser:</label>\
         <button type=\"button\" id=\"generate\" onclick=\"makeCsr()\">Generate a key pair in this browser</button> \
         <a id=\"key-download\" download=\"xenoserve-key.pem\" style=\"display:none\">Save your private key</a>\
         <textarea id=\"csr\" name=\"csr\" rows=\"8\" required></textarea>{KEYGEN_SCRIPT}"
    )
}

async fn client_form() -> Html<String> {
    page(
        "Register as a client",
        &format!(
            "<form method=\"post\" action=\"/register/client\">\
             <label for=\"name\">Name</label><input type=\"text\" id=\"name\" name=\"name\" required>\
             <label for=\"address\">Address</label><textarea id=\"address\" name=\"address\" rows=\"3\" required></textarea>\
             <label for=\"charging\">Charging details (how we bill you)</label><input type=\"text\" id=\"charging\" name=\"charging\" required>\
             <fieldset><legend>Privacy</legend>\
             <label><input type=\"radio\" name=\"privacy\" value=\"identified\" checked> Identified: your certificate names you</label>\
             <label><input type=\"radio\" name=\"privacy\" id=\"pseudonymous\" value=\"pseudonymous\"> Pseudonymous: servers see only an opaque account id</label>\
             </fieldset>{}<p><button type=\"submit\" id=\"submit\">Register</button></p></form>",
            csr_field()
        ),
    )
}

async fn server_form() -> Html<String> {
    page(
        "Register a XenoServer",
        &format!(
            "<form method=\"post\" action=\"/register/server\">\
             <label for=\"name\">Operator name</label><input type=\"text\" id=\"name\" name=\"name\" required>\
             <label for=\"address\">Operator address</label><textarea id=\"address\" name=\"address\" rows=\"3\" required></textarea>\
             <label for=\"payout\">Payout details</label><input type=\"text\" id=\"payout\" name=\"payout\" required>\
             <label for=\"endpoint\">Endpoint (host:port clients use)</label><input type=\"text\" id=\"endpoint\" name=\"endpoint\" required>\
             <label for=\"architecture\">Architecture</label><input type=\"text\" id=\"architecture\" name=\"architecture\" value=\"x86_64\" required>\
             <label for=\"cpu_model\">CPU model</label><input type=\"text\" id=\"cpu_model\" name=\"cpu_model\">\
             <label for=\"cpu_cores\">CPU cores</label><input type=\"text\" id=\"cpu_cores\" name=\"cpu_cores\" required>\
             <label for=\"memory_mb\">Memory (MB)</label><input type=\"text\" id=\"memory_mb\" name=\"memory_mb\" required>\
             <label for=\"network_mbps\">Network (Mbps)</label><input type=\"text\" id=\"network_mbps\" name=\"network_mbps\" value=\"0\">\
             <label for=\"xis_node\">XIS node</label><input type=\"text\" id=\"xis_node\" name=\"xis_node\">\
             {}<p><button type=\"submit\" id=\"submit\">Register</button></p></form>",
            csr_field()
        ),
    )
}

#[derive(Deserialize)]
struct ClientForm {
    name: String,
    address: String,
    charging: String,
    privacy: String,
    csr: String,
}

#[derive(Deserialize)]
struct ServerForm {
    name: String,
    address: String,
    payout: String,
    endpoint: String,
    architecture: String,
    #[serde(default)]
    cpu_model: String,
    cpu_cores: String,
    memory_mb: String,
    #[serde(default)]
    network_mbps: String,
    #[serde(default)]
    xis_node: String,
    csr: String,
}

/// A textarea's value with the browser's line breaks undone: HTML form submission normalises
/// every newline in a textarea to CRLF, and the corp refuses a carriage return as a control
/// character, so a multi-line address would otherwise never register.
fn textarea(value: String) -> String {
    value.replace("\r\n", "\n").replace('\r', "\n")
}

fn registered_page(state: &WebState, account_id: &str, certificate_pem: &str) -> Response {
    let link = format!("/account/{}/{}", account_id, token(&state.key, account_id));
    page(
        "Registered",
        &format!(
            "<p>Your account id is <strong id=\"account-id\">{id}</strong>.</p>\
             <p>Keep this private link to your account page: <a id=\"account-link\" href=\"{link}\">{link}</a></p>\
             <label for=\"certificate\">Your certificate (save it beside your private key):</label>\
             <textarea id=\"certificate\" rows=\"12\" readonly>{certificate}</textarea>\
             <label for=\"ca\">This corp's CA certificate (trust it for the corp and its servers):</label>\
             <textarea id=\"ca\" rows=\"8\" readonly>{ca}</textarea>",
            id = escape(account_id),
            link = escape(&link),
            certificate = escape(certificate_pem),
            ca = escape(&state.ca_pem),
        ),
    )
    .into_response()
}

async fn register_client(State(state): State<WebState>, Form(form): Form<ClientForm>) -> Response {
    let privacy = match form.privacy.as_str() {
        "identified" => Privacy::Identified,
        "pseudonymous" => Privacy::Pseudonymous,
        other => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("privacy: unknown mode {other:?}"),
            );
        }
    };
    let registration = ClientRegistration {
        name: form.name,
        address: textarea(form.address),
        charging_details: form.charging,
        privacy,
        csr_pem: form.csr,
    };
    let now = crate::service::now_ms();
    match state
        .writer
        .submit(move |corp, _, effects| corp.register_client(now, registration, effects))
        .await
    {
        Ok(registered) => {
            registered_page(&state, &registered.account_id, &registered.certificate_pem)
        }
        Err(error) => error_page(StatusCode::BAD_REQUEST, &error.to_string()),
    }
}

async fn register_server(State(state): State<WebState>, Form(form): Form<ServerForm>) -> Response {
    let number = |field: &str, text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("{field}: expected a whole number, got {text:?}"))
    };
    let parsed = (|| -> Result<MachineSpec, String> {
        Ok(MachineSpec {
            architecture: form.architecture.clone(),
            cpu_model: form.cpu_model.clone(),
            cpu_cores: u32::try_from(number("CPU cores", &form.cpu_cores)?)
                .map_err(|_| "CPU cores: too many".to_owned())?,
            memory_mb: number("memory", &form.memory_mb)?,
            network_mbps: u32::try_from(number(
                "network",
                if form.network_mbps.is_empty() {
                    "0"
                } else {
                    &form.network_mbps
                },
            )?)
            .map_err(|_| "network: too fast".to_owned())?,
            xis_node: form.xis_node.clone(),
            endpoint: form.endpoint.clone(),
        })
    })();
    let machine = match parsed {
        Ok(machine) => machine,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let registration = ServerRegistration {
        owner_name: form.name,
        owner_address: textarea(form.address),
        payout_details: form.payout,
        machine,
        csr_pem: form.csr,
    };
    let now = crate::service::now_ms();
    match state
        .writer
        .submit(move |corp, _, effects| corp.register_server(now, registration, effects))
        .await
    {
        Ok(registered) => {
            registered_page(&state, &registered.account_id, &registered.certificate_pem)
        }
        Err(error) => error_page(StatusCode::BAD_REQUEST, &error.to_string()),
    }
}

fn account_html(view: &AccountView, audits: &[crate::core::OrderAudit]) -> String {
    let mut body = format!(
        "<p>Account <strong id=\"account-id\">{}</strong> ({}), {}.</p><h2>Balances</h2><table id=\"balances\">\
         <tr><th>Currency</th><th>Available</th><th>Reserved in open orders</th></tr>",
        escape(&view.account_id),
        escape(&view.name),
        escape(&view.role)
    );
    for (currency, available, reserved) in &view.balances {
        let _ = write!(
            body,
            "<tr><td>{currency}</td><td class=\"available\">{}</td><td>{}</td></tr>",
            format_minor(*available),
            format_minor(*reserved)
        );
    }
    body.push_str("</table><h2>Purchase orders</h2>");
    if view.orders.is_empty() {
        body.push_str("<p>None yet.</p>");
    }
    for audit in audits {
        let order = &audit.order;
        let _ = write!(
            body,
            "<h3 class=\"order\">{id}</h3><p>{state}; amount {amount}; charged <span class=\"charged\">{charged}</span>{server}.</p>\
             <table class=\"charges\"><tr><th>#</th><th>Charge</th><th>Outcome</th><th>Period</th><th>CPU ms</th><th>Memory MB·s</th><th>Activity</th></tr>",
            id = escape(&order.order_id),
            state = order.state.as_str(),
            amount = order.amount,
            charged = order.charged,
            server = order
                .bound_server
                .as_ref()
                .map(|s| format!(" on server {}", escape(s)))
                .unwrap_or_default(),
        );
        for charge in &audit.charges {
            let usage = UsageRecord::parse(charge.usage_xml.as_bytes()).ok();
            let (period, cpu, memory, activity) = match &usage {
                Some(usage) => (
                    format!(
                        "{} – {}",
                        xeno_schemas::schema::types::format_date_time(usage.period_start),
                        xeno_schemas::schema::types::format_date_time(usage.period_end)
                    ),
                    usage.cpu_ms.to_string(),
                    format!("{:.3}", usage.memory_mb_ms as f64 / 1000.0),
                    usage.activity.clone().unwrap_or_default(),
                ),
                None => Default::default(),
            };
            let _ = write!(
                body,
                "<tr class=\"charge\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                charge.record.sequence,
                format_minor(charge.record.amount_minor),
                charge.record.outcome.as_str(),
                escape(&period),
                cpu,
                memory,
                escape(&activity)
            );
        }
        body.push_str("</table>");
        if audit.next_after_sequence != 0 {
            let _ = write!(
                body,
                "<p class=\"more\">Later charges are not shown here; <code>xeno audit {}</code> lists them all.</p>",
                escape(&order.order_id)
            );
        }
    }
    body
}

/// Most charges shown per order on the account page (the whole trail is `xeno audit`'s).
const CHARGES_SHOWN_MAX: usize = 100;

async fn account_page(
    State(state): State<WebState>,
    Path((account, presented)): Path<(String, String)>,
) -> Response {
    let genuine = hex::decode(&presented)
        .is_ok_and(|tag| hmac::verify(&state.key, account.as_bytes(), &tag).is_ok());
    if !genuine {
        return error_page(StatusCode::NOT_FOUND, "no such account page");
    }
    let result = state
        .writer
        .submit(move |corp, store, pending| {
            let view = corp.account_view(&account)?;
            let audits = view
                .orders
                .iter()
                .filter_map(|order| {
                    let page = AuditPage {
                        order_id: &order.order_id,
                        after_sequence: 0,
                        limit: CHARGES_SHOWN_MAX,
                    };
                    corp.audit_order_for(store, pending, &account, page).ok()
                })
                .collect::<Vec<_>>();
            Ok((view, audits))
        })
        .await;
    match result {
        Ok((view, audits)) => page("Your account", &account_html(&view, &audits)).into_response(),
        Err(error) => error_page(StatusCode::NOT_FOUND, &error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pages_escape_markup_and_characters_that_disguise_text() {
        assert_eq!(
            super::escape("<b>\"Zoë\" & 'co'</b>"),
            "&lt;b&gt;&quot;Zoë&quot; &amp; &#39;co&#39;&lt;/b&gt;"
        );
        assert_eq!(super::escape("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
    }
}
