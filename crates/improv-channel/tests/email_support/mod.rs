//! Real mail servers for the email tests, each started in a temp folder of its own and stopped
//! when dropped: Dovecot (Debian's `dovecot-imapd`) serving one maildir over IMAP on a free
//! loopback port, and an SMTP server from PyPI's `aiosmtpd` that writes each message it takes
//! to a folder. The SMTP server fails on request: a file named after a fault in its control
//! folder makes the next transaction fail that way (the file is taken, so it fails once).
//! Either server can speak TLS ([`Wire`]: from the first byte, or STARTTLS it requires) with a
//! certificate from a private CA the test makes ([`PrivateCa`], rcgen).
//! A missing server fails the test with what to install; nothing is skipped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "bot";
pub const PASSWORD: &str = "door-test-password";

/// A free loopback port (bound, then let go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the server on `port` greets with `greeting`, or panics with its log.
fn wait_greeting(port: u16, greeting: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut line = String::new();
            if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with(greeting) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the server on port {port} did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Waits until something listens on `port`, or panics with the server's log.
fn wait_listening(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server on port {port} did not start; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn id(flag: &str, user: Option<&str>) -> u32 {
    let out = Command::new("id")
        .arg(flag)
        .args(user)
        .output()
        .expect("`id` runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn name(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("`id` runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How a test server protects its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Plain text, no STARTTLS offered.
    Plain,
    /// TLS from the first byte (imaps, smtps).
    Implicit,
    /// Plain first, STARTTLS required before a login or a message.
    StartTls,
}

/// A certificate authority made for one test, and a certificate it signed for `127.0.0.1` and
/// `localhost`; the CA's certificate is written to `ca_file`.
pub struct PrivateCa {
    pub ca_file: PathBuf,
    /// The server's certificate and key, PEM.
    pub cert: String,
    pub key: String,
}

impl PrivateCa {
    /// A new CA named `name`, its certificate in `dir/{name}.pem`.
    pub fn new(dir: &Path, name: &str) -> PrivateCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        PrivateCa {
            ca_file,
            cert: server.pem(),
            key: server_key.serialize_pem(),
        }
    }
}

/// Dovecot serving user [`USER`]'s maildir on a loopback port, in plain text.
pub struct Dovecot {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Dovecot {
    /// Plain IMAP on a loopback port.
    pub fn start(root: &Path) -> Dovecot {
        Dovecot::start_with(root, None, Wire::Plain)
    }

    /// IMAP with `ssl = required` and the certificate `ca` signed: imaps, or STARTTLS (a
    /// login before it is refused).
    pub fn start_tls(root: &Path, ca: &PrivateCa, wire: Wire) -> Dovecot {
        Dovecot::start_with(root, Some((ca.cert.clone(), ca.key.clone())), wire)
    }

    /// IMAP over TLS from the first byte (imaps) with a certificate no public root signed.
    pub fn start_self_signed(root: &Path) -> Dovecot {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        let pem = (certified.cert.pem(), certified.signing_key.serialize_pem());
        Dovecot::start_with(root, Some(pem), Wire::Implicit)
    }

    /// What Dovecot logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Waits (at most a minute) until the log holds one of `lines`; returns the one it holds.
    pub async fn wait_log(&self, lines: &[&'static str]) -> &'static str {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if let Some(line) = lines.iter().find(|l| log.contains(**l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "none of {lines:?} in:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_with(root: &Path, tls: Option<(String, String)>, wire: Wire) -> Dovecot {
        let Some(binary) = dovecot() else {
            panic!(
                "dovecot is not installed; the email tests read mail from a real IMAP server: \
                 apt-get install -y dovecot-imapd (.ci/run installs it)"
            );
        };
        let dir = root.join("dovecot");
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        std::fs::write(dir.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        // As root, Dovecot's login processes and the mail user must not be root: they run as
        // `nobody`, who must reach the maildir (the temp folders are made traversable).
        let root_user = id("-u", None) == 0;
        let (internal, internal_group, login_user, mail_uid, mail_gid) = if root_user {
            let nobody = Some("nobody");
            (
                "root".into(),
                "root".into(),
                "nobody".into(),
                id("-u", nobody),
                id("-g", nobody),
            )
        } else {
            (
                name("-un"),
                name("-gn"),
                name("-un"),
                id("-u", None),
                id("-g", None),
            )
        };
        if root_user {
            use std::os::unix::fs::PermissionsExt;
            for d in [root, &dir] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            std::os::unix::fs::chown(dir.join("mail"), Some(mail_uid), Some(mail_gid)).unwrap();
        }
        let port = free_port();
        let d = dir.display();
        let (ssl, imap_port, imaps_port) = match &tls {
            None => ("ssl = no".to_string(), port, 0),
            Some((cert, key)) => {
                std::fs::write(dir.join("cert.pem"), cert).unwrap();
                std::fs::write(dir.join("key.pem"), key).unwrap();
                let ssl =
                    format!("ssl = required\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem");
                match wire {
                    Wire::StartTls => (ssl, port, 0),
                    _ => (ssl, 0, port),
                }
            }
        };
        std::fs::write(
            dir.join("dovecot.conf"),
            format!(
                r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login_user}
mail_location = maildir:{d}/mail/%u
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
"#,
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .args(["-F", "-c"])
            .arg(dir.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let log = dir.join("dovecot.log");
        match wire {
            Wire::Plain | Wire::StartTls => wait_greeting(port, "* OK", &log),
            // A TLS server greets only after a handshake: its port taking connections is enough.
            Wire::Implicit => wait_listening(port, &log),
        }
        Dovecot { port, child, dir }
    }

    /// Delivers `raw` into the INBOX (IMAP APPEND, as a mail client or a delivery agent would).
    pub async fn append(&self, raw: &str) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap().unwrap();
        let mut session = client
            .login(USER, PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        session
            .append("INBOX", None, None, raw.replace('\n', "\r\n"))
            .await
            .unwrap();
        session.logout().await.unwrap();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM, so the master stops its login and auth processes too.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// Dovecot's binary: in sbin, which a plain user's PATH may lack, or on the PATH.
fn dovecot() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v dovecot"])
        .output()
        .ok()?;
    let on_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    [
        "/usr/sbin/dovecot",
        "/usr/local/sbin/dovecot",
        on_path.as_str(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_absolute() && p.exists())
}

const SMTP_SERVER: &str = r#"
import asyncio, os, ssl, sys, threading
from aiosmtpd.controller import Controller

port, out, control = int(sys.argv[1]), sys.argv[2], sys.argv[3]
wire = sys.argv[4] if len(sys.argv) > 4 else "plain"
context = None
if wire != "plain":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[5], sys.argv[6])

def take(fault):
    try:
        os.remove(os.path.join(control, fault))
        return True
    except FileNotFoundError:
        return False

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if take("die-at-rcpt"):
            os._exit(3)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if take("die-after-data"):
            os._exit(3)
        if take("refuse-451"):
            return "451 4.3.0 Try again later"
        if take("refuse-554"):
            return "554 5.6.0 Message rejected"
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        tmp = os.path.join(out, "%04d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-To: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(out, "%04d.eml" % n))
        if take("hang-after-data"):
            await asyncio.sleep(3600)
        return "250 OK"

if wire == "implicit":
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ssl_context=context)
elif wire == "starttls":
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
else:
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
controller.start()
threading.Event().wait()
"#;

/// Faults the SMTP server can be told to make once.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The process exits when the recipient is named: killed mid-send, nothing taken.
    DieAtRcpt,
    /// The process exits after the whole message arrived, before answering.
    DieAfterData,
    /// `451`: not taken, try later.
    Refuse451,
    /// `554`: refused for good.
    Refuse554,
    /// Takes the message, then never answers.
    HangAfterData,
}

/// aiosmtpd on a loopback port, writing each message it takes to `out/NNNN.eml`.
pub struct Smtp {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Smtp {
    pub fn start(root: &Path) -> Smtp {
        Smtp::start_on(root, free_port())
    }

    /// Starts (or restarts) the server on `port`, keeping what it took before.
    pub fn start_on(root: &Path, port: u16) -> Smtp {
        Smtp::start_with(root, port, Wire::Plain, None)
    }

    /// An SMTP server with the certificate `ca` signed: smtps, or STARTTLS required before a
    /// message is taken.
    pub fn start_tls(root: &Path, ca: &PrivateCa, wire: Wire) -> Smtp {
        Smtp::start_with(root, free_port(), wire, Some(ca))
    }

    fn start_with(root: &Path, port: u16, wire: Wire, ca: Option<&PrivateCa>) -> Smtp {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 with aiosmtpd is needed; the email tests send mail to a real SMTP server: \
             pip install aiosmtpd (.ci/run installs it)"
        );
        let dir = root.join("smtp");
        for d in ["out", "control"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("server.py"), SMTP_SERVER).unwrap();
        let log = dir.join(format!("server-{port}.log"));
        let mut command = Command::new("python3");
        command
            .arg(dir.join("server.py"))
            .arg(port.to_string())
            .arg(dir.join("out"))
            .arg(dir.join("control"));
        if let Some(ca) = ca {
            std::fs::write(dir.join("cert.pem"), &ca.cert).unwrap();
            std::fs::write(dir.join("key.pem"), &ca.key).unwrap();
            let word = match wire {
                Wire::Implicit => "implicit",
                Wire::StartTls => "starttls",
                Wire::Plain => "plain",
            };
            command
                .arg(word)
                .arg(dir.join("cert.pem"))
                .arg(dir.join("key.pem"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        match wire {
            Wire::Implicit => wait_listening(port, &log),
            Wire::Plain | Wire::StartTls => wait_greeting(port, "220", &log),
        }
        Smtp { port, child, dir }
    }

    pub fn fail_next(&self, fault: Fault) {
        let name = match fault {
            Fault::DieAtRcpt => "die-at-rcpt",
            Fault::DieAfterData => "die-after-data",
            Fault::Refuse451 => "refuse-451",
            Fault::Refuse554 => "refuse-554",
            Fault::HangAfterData => "hang-after-data",
        };
        std::fs::write(self.dir.join("control").join(name), "").unwrap();
    }

    /// Whether the server process has exited (a fault that kills it).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Every message taken so far, oldest first, as received (envelope recipient first).
    pub fn received(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.join("out"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let mut s = String::new();
                std::fs::File::open(p)
                    .unwrap()
                    .read_to_string(&mut s)
                    .unwrap();
                s
            })
            .collect()
    }

    /// Waits until `n` messages were taken (at most a minute), and returns them.
    pub async fn wait_received(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} messages expected at the SMTP server, {} arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of header `name` in `raw` (first occurrence, unfolded), if any.
pub fn header(raw: &str, name: &str) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw.as_bytes())?;
    message
        .header_raw(name)
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The text body of `raw`.
pub fn text(raw: &str) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    message.body_text(0).unwrap_or_default().to_string()
}
