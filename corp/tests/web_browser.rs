//! The web registration end to end in a real browser: headless Chromium, driven over WebDriver,
//! fills in the client form, generates its key pair with WebCrypto (the private key stays in the
//! browser; the test plays the user who saved it), registers, and opens the private account
//! page. The test then acts as that client over mutual TLS with the browser-made key and the
//! issued certificate, buys and spends, and checks that the account page shows it all.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test is skipped, except
//! under CI (`CI=true`), where their absence is a failure.

mod support;

use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use xeno_schemas::proto::corp::v1 as pb;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const POUND: u64 = 1_000_000;
/// The longest any one wait on the browser may take.
const WAIT: Duration = Duration::from_secs(30);
/// The longest the whole browser scenario may take.
const SCENARIO: Duration = Duration::from_secs(240);

/// A chromedriver child process, killed (with every browser it started) when dropped, also when
/// the test panics.
struct ChromeDriver {
    child: Child,
    /// Already exited and reaped: nothing to kill.
    exited: bool,
    port: u16,
    log: PathBuf,
    profile: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port and waits until it accepts connections.
    async fn start() -> ChromeDriver {
        // A port is found free and then handed over, so another process could take it in
        // between: chromedriver then exits, and we try again on another port.
        for _attempt in 0..3 {
            if let Some(driver) = Self::launch().await {
                return driver;
            }
        }
        panic!("chromedriver could not listen on a free loopback port");
    }

    async fn launch() -> Option<ChromeDriver> {
        let dir = tempfile::tempdir().expect("a temporary directory for the browser");
        let log = dir.path().join("chromedriver.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts can be killed with it.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let mut driver = ChromeDriver {
            child,
            exited: false,
            port,
            log,
            profile: dir.path().join("profile"),
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(driver);
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                driver.exited = true;
                println!("chromedriver on port {port} exited ({status}); trying another port");
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A WebDriver session with headless Chromium.
    async fn session(&self) -> Client {
        let mut capabilities = Capabilities::new();
        capabilities.insert("browserName".to_owned(), "chrome".into());
        capabilities.insert("acceptInsecureCerts".to_owned(), true.into());
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--ignore-certificate-errors",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("Chromium started within a minute")
        .expect("a WebDriver session with headless Chromium");
        browser
            .update_timeouts(TimeoutConfiguration::new(
                Some(WAIT),
                Some(WAIT),
                Some(Duration::ZERO),
            ))
            .await
            .expect("setting the browser's timeouts");
        browser
    }

    /// The end of chromedriver's log, for a failure's report.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut file| file.read_to_string(&mut text));
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("--- chromedriver log (end) ---\n{}", self.log_tail());
        }
        if self.exited {
            return;
        }
        // chromedriver leads its own process group (see `launch`), which holds the browsers it
        // started: kill the group, then make sure of chromedriver itself and reap it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip_without_browser() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return false;
    }
    xeno_tests::prerequisite::missing(&format!(
        "{CHROMIUM} and {CHROMEDRIVER} are not installed (apt-get install chromium chromium-driver)"
    ));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_in_a_browser_then_see_spending_on_the_account_page() {
    if skip_without_browser() {
        return;
    }
    let started = Instant::now();
    let corp = TestCorp::start(&Backend::Sqlite).await;
    let driver = ChromeDriver::start().await;
    let browser = driver.session().await;
    let outcome = AssertUnwindSafe(tokio::time::timeout(SCENARIO, scenario(&browser, &corp)))
        .catch_unwind()
        .await;
    if outcome.as_ref().is_err() || outcome.as_ref().is_ok_and(Result::is_err) {
        // Show where the browser was, to explain the failure.
        if let Ok(Ok(url)) = tokio::time::timeout(WAIT, browser.current_url()).await {
            println!("--- browser at {url} ---");
        }
        if let Ok(Ok(source)) = tokio::time::timeout(WAIT, browser.source()).await {
            println!("{source}");
        }
    }
    // End the session (which quits Chromium) whatever happened; the driver's guard kills
    // whatever is left.
    let _ = tokio::time::timeout(WAIT, browser.close()).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the browser scenario took over {SCENARIO:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    drop(driver);
    corp.harness().assert_invariants().await;
    println!("browser test took {:?}", started.elapsed());
}

async fn scenario(browser: &Client, corp: &TestCorp) {
    let web = corp
        .running()
        .web_addr
        .expect("the test corp serves the web");
    let base = format!("https://{web}");
    let harness = corp.harness();

    // A request that is not a CSR is refused with the reason, and makes no account.
    open_client_form(browser, &base).await;
    fill_in(browser, "Mallory", "1 Nowhere Street", "card ending 0000").await;
    find(browser, Locator::Id("csr"))
        .await
        .send_keys("-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgcmVxdWVzdA==\n-----END CERTIFICATE REQUEST-----\n")
        .await
        .expect("typing a bogus request");
    click(browser, "submit").await;
    let error = wait_for(browser, Locator::Id("error"))
        .await
        .text()
        .await
        .expect("the error's text");
    assert!(
        error.contains("certificate signing request"),
        "the refusal names the request: {error:?}"
    );
    assert_eq!(
        browser.title().await.expect("title"),
        "Registration refused · XenoCorp"
    );

    // The real thing: a key pair made in the browser.
    open_client_form(browser, &base).await;
    let names = form_field_names(browser).await;
    assert_eq!(
        names,
        ["address", "charging", "csr", "name", "privacy"],
        "the form sends no key material, only these fields"
    );
    let name = "Ada Lovelace & <Co>";
    fill_in(
        browser,
        name,
        "12 St James's Square\nLondon",
        "card ending 1815",
    )
    .await;
    click(browser, "pseudonymous").await;
    click(browser, "generate").await;
    let csr = poll("the browser to fill in the CSR", || async {
        let csr = find(browser, Locator::Id("csr"))
            .await
            .prop("value")
            .await
            .expect("the CSR field's value")
            .unwrap_or_default();
        (!csr.is_empty()).then_some(csr)
    })
    .await;
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
            && csr
                .trim_end()
                .ends_with("-----END CERTIFICATE REQUEST-----"),
        "a PEM request: {csr}"
    );
    let download = find(browser, Locator::Id("key-download")).await;
    assert!(
        download.is_displayed().await.expect("visibility"),
        "the key download is offered"
    );
    let href = download
        .attr("href")
        .await
        .expect("the download's href")
        .expect("the download has an href");
    let key_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(
                href.strip_prefix("data:application/x-pem-file;base64,")
                    .unwrap_or_else(|| panic!("a PEM data URL: {href}")),
            )
            .expect("the data URL is base64"),
    )
    .expect("the key PEM is text");
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n")
            && key_pem.trim_end().ends_with("-----END PRIVATE KEY-----"),
        "a PKCS#8 PEM key: {key_pem}"
    );
    assert!(!csr.contains("PRIVATE KEY"));
    click(browser, "submit").await;

    let certificate_field = poll("the registration's answer", || async {
        if let Ok(error) = browser.find(Locator::Id("error")).await {
            let error = error.text().await.unwrap_or_default();
            panic!("the browser-made registration was refused: {error}");
        }
        browser.find(Locator::Id("certificate")).await.ok()
    })
    .await;
    let certificate = certificate_field
        .prop("value")
        .await
        .expect("the certificate field's value")
        .expect("a certificate");
    let account_id = text(browser, Locator::Id("account-id")).await;
    assert_eq!(
        account_id, "corp-t:c-1",
        "the refused request made no account"
    );
    assert!(
        certificate.starts_with("-----BEGIN CERTIFICATE-----"),
        "{certificate}"
    );
    assert_eq!(
        common_name(&certificate),
        account_id,
        "a pseudonymous certificate names only the account"
    );

    // The private link leads to the account page; a forged one does not.
    click(browser, "account-link").await;
    wait_for(browser, Locator::Id("balances")).await;
    let account_url = browser.current_url().await.expect("the account page's URL");
    assert_eq!(text(browser, Locator::Id("account-id")).await, account_id);
    let body = text(browser, Locator::Css("body")).await;
    assert!(
        body.contains(&format!("Account {account_id} ({name}), client.")),
        "the page names the account, its holder (escaped correctly) and role: {body}"
    );
    assert!(body.contains("None yet."), "no orders yet: {body}");

    browser
        .goto(&format!("{base}/account/{account_id}/00"))
        .await
        .expect("opening a forged link");
    assert!(
        text(browser, Locator::Id("error"))
            .await
            .contains("no such account page")
    );

    // The user, with the key saved from the browser and the certificate, spends over mTLS.
    harness.deposit(&account_id, 20 * POUND).await;
    let mut client = harness
        .party(account_id.clone(), certificate, key_pem)
        .await;
    let order = client.buy(5 * POUND).await;
    let order_id = order.issued.order_id.clone();
    let signed = client.sign(&order, None);
    let mut server = harness.register_server("xs1").await;
    server
        .validate(&signed, "session-1", "Wasm")
        .await
        .expect("the server validates the browser-signed order");
    for (sequence, amount) in [(1, POUND), (2, 250_000)] {
        let charge = server
            .charge(&order_id, sequence, amount)
            .await
            .expect("a charge");
        assert_eq!(charge.outcome, pb::ChargeOutcome::Charged as i32);
    }
    let account = client.account().await;
    assert_eq!(available_gbp(&account), 15 * POUND);

    // The account page shows the order, its charges with what they paid for, and the balance.
    browser
        .goto(account_url.as_str())
        .await
        .expect("back to the account page");
    browser.refresh().await.expect("reloading the account page");
    wait_for(browser, Locator::Id("balances")).await;
    let orders = texts(browser, Locator::Css("h3.order")).await;
    assert_eq!(orders, [order_id.as_str()], "the one order");
    let charged = texts(browser, Locator::Css("span.charged")).await;
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert!(
        charged[0] == "1.25" || charged[0].starts_with("1.25 "),
        "charged total: {charged:?}"
    );
    let rows = browser
        .find_all(Locator::Css("table.charges tr.charge"))
        .await
        .expect("the charge rows");
    assert_eq!(rows.len(), 2, "two charges");
    let mut activities = Vec::new();
    for row in rows {
        let cells = row
            .find_all(Locator::Css("td"))
            .await
            .expect("a charge's cells");
        let mut cell_texts = Vec::new();
        for cell in cells {
            cell_texts.push(cell.text().await.expect("a cell's text"));
        }
        activities.push((
            cell_texts.first().cloned().unwrap_or_default(),
            cell_texts.get(1).cloned().unwrap_or_default(),
            cell_texts.last().cloned().unwrap_or_default(),
        ));
    }
    activities.sort();
    assert_eq!(
        activities,
        [
            (
                "1".to_owned(),
                "1.00".to_owned(),
                "task hello running (charge 1)".to_owned()
            ),
            (
                "2".to_owned(),
                "0.25".to_owned(),
                "task hello running (charge 2)".to_owned()
            ),
        ]
    );
    let available = texts(browser, Locator::Css("#balances td.available")).await;
    assert_eq!(available, ["15.00"], "GBP available after reserving 5.00");
    harness.assert_invariants().await;
}

async fn open_client_form(browser: &Client, base: &str) {
    browser
        .goto(&format!("{base}/register/client"))
        .await
        .expect("opening the client registration form");
    wait_for(browser, Locator::Id("submit")).await;
}

async fn fill_in(browser: &Client, name: &str, address: &str, charging: &str) {
    for (id, value) in [("name", name), ("address", address), ("charging", charging)] {
        find(browser, Locator::Id(id))
            .await
            .send_keys(value)
            .await
            .unwrap_or_else(|error| panic!("typing into #{id}: {error}"));
    }
}

/// The names of the fields the registration form submits, sorted and deduplicated.
async fn form_field_names(browser: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for field in browser
        .find_all(Locator::Css("form [name]"))
        .await
        .expect("the form's fields")
    {
        if let Some(name) = field.attr("name").await.expect("a field's name") {
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn click(browser: &Client, id: &str) {
    find(browser, Locator::Id(id))
        .await
        .click()
        .await
        .unwrap_or_else(|error| panic!("clicking #{id}: {error}"));
}

async fn find(browser: &Client, locator: Locator<'_>) -> Element {
    browser
        .find(locator)
        .await
        .unwrap_or_else(|error| panic!("finding {locator:?}: {error}"))
}

async fn wait_for(browser: &Client, locator: Locator<'_>) -> Element {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(locator)
        .await
        .unwrap_or_else(|error| panic!("waiting for {locator:?}: {error}"))
}

async fn text(browser: &Client, locator: Locator<'_>) -> String {
    find(browser, locator)
        .await
        .text()
        .await
        .unwrap_or_else(|error| panic!("the text of {locator:?}: {error}"))
}

async fn texts(browser: &Client, locator: Locator<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for element in browser
        .find_all(locator)
        .await
        .unwrap_or_else(|error| panic!("finding {locator:?}: {error}"))
    {
        out.push(
            element
                .text()
                .await
                .unwrap_or_else(|error| panic!("the text of {locator:?}: {error}")),
        );
    }
    out
}

/// Polls `probe` until it gives a value, for at most [`WAIT`].
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The subject common name of a PEM certificate.
fn common_name(certificate_pem: &str) -> String {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()).expect("a PEM certificate");
    let certificate = pem.parse_x509().expect("an X.509 certificate");
    certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("a common name")
        .to_owned()
}
