//! A private D-Bus session bus per test, and a notification server on it that records every
//! call instead of showing anything.
//!
//! Owns: the `dbus-daemon` process and its generated config and socket (in a TempDir), and
//! the zbus connection serving `org.freedesktop.Notifications` on its own thread.
//!
//! The server can be frozen ([`NotificationServer::freeze`]): every method handler then
//! blocks the connection's executor until [`NotificationServer::thaw`], so calls are
//! received by the bus but never answered, as with a notification server stopped by
//! SIGSTOP. It can be restarted ([`NotificationServer::restart`]): a new connection takes
//! the name, so the name's owner changes and ids start again at 1, as when a real server
//! restarts. Every method call is recorded by name ([`NotificationServer::calls`]). It
//! emits the signals a real server sends when the user acts on a popup: `ActionInvoked`,
//! `ActivationToken` (spec 1.2, before the `ActionInvoked` of a click) and
//! `NotificationClosed`.
//!
//! zbus 6 is async only. The server thread runs one `zbus::block_on` for its whole life: it
//! builds the connection (which requests the well-known name before returning), reports
//! readiness over a std channel, then awaits commands (emit a signal, shut down) from a tiny
//! hand-written async mailbox, so that everything touching the connection happens on the
//! thread whose runtime drives it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use zbus::{interface, OwnedVariant, Variant};

use super::{lock, spawn_tracked, wait_until, TrackedChild};

pub const NOTIFICATIONS_NAME: &str = "org.freedesktop.Notifications";
pub const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";
pub const NOTIFICATIONS_INTERFACE: &str = "org.freedesktop.Notifications";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `dbus-daemon` listening on `unix:path=<tempdir>/bus`, killed on drop.
pub struct SessionBus {
    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS` or `Builder::address`.
    pub address: String,
    pub socket: PathBuf,
    // Stop the daemon before its directory goes (held for its `Drop`).
    process: TrackedChild,
    _dir: TempDir,
}

impl SessionBus {
    pub fn start() -> SessionBus {
        Self::start_inner(false)
    }

    /// A bus that activates a notification service which never takes its name (what a
    /// broken or misconfigured notifier does): every call to the name waits out the bus's
    /// activation timeout (`service_start_timeout`, 25 s by default).
    pub fn start_with_stuck_notification_service() -> SessionBus {
        Self::start_inner(true)
    }

    fn start_inner(stuck_service: bool) -> SessionBus {
        let dir = tempfile::Builder::new()
            .prefix("mailpushd-dbus.")
            .tempdir()
            .expect("create dbus temp dir");
        let socket = dir.path().join("bus");
        let config = dir.path().join("session.conf");
        let servicedir = if stuck_service {
            let services = dir.path().join("services");
            std::fs::create_dir(&services).expect("create service dir");
            // Never takes the name, and ends by itself once the bus's socket is gone (the
            // test's temp dir removed), so no process outlives the test.
            let script = services.join("stuck-notifier.sh");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nwhile [ -S '{}' ]; do sleep 0.2; done\n",
                    socket.display()
                ),
            )
            .expect("write stuck service script");
            std::fs::write(
                services.join("org.freedesktop.Notifications.service"),
                format!(
                    "[D-BUS Service]\nName=org.freedesktop.Notifications\nExec=/bin/sh {}\n",
                    script.display()
                ),
            )
            .expect("write service file");
            format!(
                "<servicedir>{}</servicedir>",
                xml_escape(&services.to_string_lossy())
            )
        } else {
            String::new()
        };
        // A minimal session bus: only our socket, no service activation (unless asked for
        // the stuck one), and a policy that allows everything (the bus is private to this
        // test).
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  {servicedir}
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                xml_escape(&socket.to_string_lossy())
            ),
        )
        .expect("write dbus session config");

        // stderr goes to a file: as root dbus-daemon warns on every start that it cannot raise
        // its fd limit, which is noise in test output. `SessionBus::log` has it.
        let log_path = dir.path().join("dbus-daemon.log");
        let log_file = std::fs::File::create(&log_path).expect("create dbus-daemon log");
        let mut process = spawn_tracked(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .arg("--nofork")
                .arg("--nopidfile")
                .arg(format!("--config-file={}", config.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file),
        )
        .expect("spawn dbus-daemon");
        process.set_grace(Duration::from_secs(5));

        wait_until(START_TIMEOUT, "dbus-daemon to accept connections", || {
            if let Some(status) = process.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("dbus-daemon exited during startup with {status}:\n{log}");
            }
            // The socket file appears at bind(), before listen(): connecting is the test.
            UnixStream::connect(&socket).ok().map(|_| ())
        });

        SessionBus {
            address: format!("unix:path={}", socket.display()),
            socket,
            process,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// One recorded `Notify` call.
#[derive(Clone, Debug)]
pub struct Notify {
    pub app_name: String,
    pub replaces_id: u32,
    pub app_icon: String,
    pub summary: String,
    pub body: String,
    /// Flat list as on the wire: key, label, key, label, ...
    pub actions: Vec<String>,
    /// The "category" hint, e.g. "email.arrived".
    pub category: Option<String>,
    /// The "urgency" hint (0 low, 1 normal, 2 critical).
    pub urgency: Option<u8>,
    /// The "desktop-entry" hint (spec 1.2), e.g. "mailpushd".
    pub desktop_entry: Option<String>,
    /// The "sound-name" hint, e.g. "message-new-email".
    pub sound_name: Option<String>,
    /// All hints, sorted by key, rendered with `{:?}`, for assertions on anything else.
    pub hints_debug: String,
    pub expire_timeout: i32,
    /// The id the server returned.
    pub id: u32,
    /// When the call arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Recorded {
    notifications: Vec<Notify>,
    closed: Vec<u32>,
    next_id: u32,
    /// Every method call, by name, in arrival order (recorded once it is answered).
    calls: Vec<String>,
}

/// Longest a frozen handler waits for [`NotificationServer::thaw`]: a test that forgets
/// to thaw must not hang the server thread for ever.
const FREEZE_LIMIT: Duration = Duration::from_secs(120);

/// Blocks method handlers while frozen.
#[derive(Default)]
struct Gate {
    frozen: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn set(&self, frozen: bool) {
        *lock(&self.frozen) = frozen;
        self.changed.notify_all();
    }

    /// Returns at once unless frozen; then blocks the calling (executor) thread until
    /// thawed, which is what makes the whole connection stop answering.
    fn pass(&self) {
        let frozen = lock(&self.frozen);
        let _unfrozen = self
            .changed
            .wait_timeout_while(frozen, FREEZE_LIMIT, |f| *f)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

/// The served object. Methods only record; nothing is displayed.
struct Server {
    recorded: Arc<Mutex<Recorded>>,
    gate: Arc<Gate>,
}

impl Server {
    fn called(&self, method: &str) {
        self.gate.pass();
        lock(&self.recorded).calls.push(method.to_owned());
    }
}

#[interface(name = "org.freedesktop.Notifications")]
impl Server {
    fn get_capabilities(&self) -> Vec<String> {
        self.called("GetCapabilities");
        ["body", "body-markup", "actions", "persistence"]
            .map(String::from)
            .to_vec()
    }

    #[zbus(out_args("name", "vendor", "version", "spec_version"))]
    fn get_server_information(&self) -> (String, String, String, String) {
        self.called("GetServerInformation");
        (
            "mailpushd-test".into(),
            "mailpushd".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    #[allow(clippy::too_many_arguments)] // the D-Bus method's signature
    fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedVariant>,
        expire_timeout: i32,
    ) -> u32 {
        self.called("Notify");
        let at = Instant::now();
        let category = hints.get("category").and_then(variant_string);
        let urgency = hints.get("urgency").and_then(variant_u8);
        let desktop_entry = hints.get("desktop-entry").and_then(variant_string);
        let sound_name = hints.get("sound-name").and_then(variant_string);
        let sorted: BTreeMap<&String, &OwnedVariant> = hints.iter().collect();
        let mut hints_debug = String::new();
        for (k, v) in sorted {
            let _ = write!(hints_debug, "{k}={:?}; ", &**v);
        }
        let mut rec = lock(&self.recorded);
        let id = if replaces_id != 0 {
            replaces_id
        } else {
            rec.next_id += 1;
            rec.next_id
        };
        rec.notifications.push(Notify {
            app_name,
            replaces_id,
            app_icon,
            summary,
            body,
            actions,
            category,
            urgency,
            desktop_entry,
            sound_name,
            hints_debug,
            expire_timeout,
            id,
            at,
        });
        id
    }

    fn close_notification(&self, id: u32) {
        self.called("CloseNotification");
        lock(&self.recorded).closed.push(id);
    }
}

fn variant_string(v: &OwnedVariant) -> Option<String> {
    match &**v {
        Variant::Variant(inner) => String::try_from(&**inner).ok(),
        other => String::try_from(other).ok(),
    }
}

/// Urgency is a byte per the spec, but be lenient with senders that use another integer.
fn variant_u8(v: &OwnedVariant) -> Option<u8> {
    match &**v {
        Variant::U8(b) => Some(*b),
        Variant::I32(i) => u8::try_from(*i).ok(),
        Variant::U32(u) => u8::try_from(*u).ok(),
        Variant::I16(i) => u8::try_from(*i).ok(),
        Variant::U16(u) => u8::try_from(*u).ok(),
        Variant::I64(i) => u8::try_from(*i).ok(),
        Variant::U64(u) => u8::try_from(*u).ok(),
        _ => None,
    }
}

enum ServerCommand {
    Emit {
        signal: &'static str,
        id: u32,
        arg: SignalArg,
        reply: mpsc::Sender<Result<(), String>>,
    },
    Shutdown,
}

enum SignalArg {
    Str(String),
    U32(u32),
}

/// A command queue the async server loop can await without any runtime-specific channel.
#[derive(Default)]
struct Mailbox {
    queue: VecDeque<ServerCommand>,
    waker: Option<Waker>,
}

fn post(mailbox: &Mutex<Mailbox>, cmd: ServerCommand) {
    let waker = {
        let mut m = lock(mailbox);
        m.queue.push_back(cmd);
        m.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

struct NextCommand<'a>(&'a Mutex<Mailbox>);

impl Future for NextCommand<'_> {
    type Output = ServerCommand;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ServerCommand> {
        let mut m = lock(self.0);
        match m.queue.pop_front() {
            Some(cmd) => Poll::Ready(cmd),
            None => {
                m.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Owns `org.freedesktop.Notifications` on a [`SessionBus`] and records every call.
pub struct NotificationServer {
    recorded: Arc<Mutex<Recorded>>,
    mailbox: Arc<Mutex<Mailbox>>,
    thread: Option<JoinHandle<()>>,
    gate: Arc<Gate>,
    /// The connection's unique name (`:1.5`): the owner of the well-known name.
    unique_name: String,
}

impl NotificationServer {
    /// Connects, serves the interface and owns the name; returns once the name is owned.
    pub fn start(bus: &SessionBus) -> NotificationServer {
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let gate = Arc::new(Gate::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let address = bus.address.clone();
        let server = Server {
            recorded: Arc::clone(&recorded),
            gate: Arc::clone(&gate),
        };
        let thread_mailbox = Arc::clone(&mailbox);
        let thread = thread::Builder::new()
            .name("notification-server".into())
            .spawn(move || {
                zbus::block_on(serve(address, server, thread_mailbox, ready_tx));
            })
            .expect("spawn notification server thread");

        let unique_name = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(name)) => name,
            Ok(Err(e)) => panic!("notification server failed to start: {e}"),
            Err(e) => panic!("notification server did not start within {START_TIMEOUT:?}: {e}"),
        };
        NotificationServer {
            recorded,
            mailbox,
            thread: Some(thread),
            gate,
            unique_name,
        }
    }

    /// Stops answering: every method call (already received or later) blocks until
    /// [`NotificationServer::thaw`] (or two minutes), like a server under SIGSTOP.
    pub fn freeze(&self) {
        self.gate.set(true);
    }

    /// Answers again, beginning with the calls that waited.
    pub fn thaw(&self) {
        self.gate.set(false);
    }

    /// Restarts the server: this connection goes (the name has no owner for a moment),
    /// a new one takes the name. The new server remembers nothing and numbers its
    /// popups from 1 again; what was recorded before is gone too. Returns once the new
    /// connection owns the name.
    pub fn restart(&mut self, bus: &SessionBus) {
        self.shut_down();
        wait_until(
            START_TIMEOUT,
            "the notification name to be released",
            || name_owner(bus, NOTIFICATIONS_NAME).is_none().then_some(()),
        );
        *self = NotificationServer::start(bus);
    }

    /// The unique name of the server's connection (the owner of the well-known name).
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }

    /// The names of the methods called so far, in order (answered calls only).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.recorded).calls.clone()
    }

    /// How many times `method` was called (and answered).
    pub fn call_count(&self, method: &str) -> usize {
        lock(&self.recorded)
            .calls
            .iter()
            .filter(|c| *c == method)
            .count()
    }

    /// All `Notify` calls so far, in arrival order.
    pub fn notifications(&self) -> Vec<Notify> {
        lock(&self.recorded).notifications.clone()
    }

    /// Ids passed to `CloseNotification`, in order.
    pub fn closed(&self) -> Vec<u32> {
        lock(&self.recorded).closed.clone()
    }

    /// Waits until at least `n` notifications were recorded; returns all of them.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Notify> {
        wait_until(timeout, &format!("{n} desktop notifications"), || {
            let all = self.notifications();
            (all.len() >= n).then_some(all)
        })
    }

    /// Emits `ActionInvoked(id, action_key)`, as a server does when the user clicks an action.
    pub fn emit_action_invoked(&self, id: u32, action_key: &str) {
        self.emit("ActionInvoked", id, SignalArg::Str(action_key.to_owned()));
    }

    /// Emits `ActivationToken(id, token)`, as a spec 1.2 server does right before the
    /// `ActionInvoked` of a click, so that the program the click starts may take focus.
    pub fn emit_activation_token(&self, id: u32, token: &str) {
        self.emit("ActivationToken", id, SignalArg::Str(token.to_owned()));
    }

    /// A click as a spec 1.2 server on Wayland reports it: `ActivationToken(id, token)`,
    /// then `ActionInvoked(id, action_key)`.
    pub fn click_with_token(&self, id: u32, action_key: &str, token: &str) {
        self.emit_activation_token(id, token);
        self.emit_action_invoked(id, action_key);
    }

    /// Emits `NotificationClosed(id, reason)` (1 expired, 2 dismissed, 3 closed by call).
    pub fn emit_notification_closed(&self, id: u32, reason: u32) {
        self.emit("NotificationClosed", id, SignalArg::U32(reason));
    }

    fn emit(&self, signal: &'static str, id: u32, arg: SignalArg) {
        let (reply, result) = mpsc::channel();
        post(
            &self.mailbox,
            ServerCommand::Emit {
                signal,
                id,
                arg,
                reply,
            },
        );
        match result.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("emit {signal}: {e}"),
            Err(e) => panic!("emit {signal}: no answer from server thread: {e}"),
        }
    }
}

impl Drop for NotificationServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl NotificationServer {
    /// Thaws, closes the connection and ends the thread (bounded); idempotent.
    fn shut_down(&mut self) {
        self.thaw();
        post(&self.mailbox, ServerCommand::Shutdown);
        if let Some(thread) = self.thread.take() {
            // Bounded: if the thread is stuck (e.g. the bus died mid-call), leave it rather
            // than hang the test in a destructor.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

async fn serve(
    address: String,
    server: Server,
    mailbox: Arc<Mutex<Mailbox>>,
    ready: mpsc::Sender<Result<String, String>>,
) {
    let built = zbus::connection::Builder::address(address.as_str())
        .serve_at(NOTIFICATIONS_PATH, server)
        .name(NOTIFICATIONS_NAME)
        .build()
        .await;
    let conn = match built {
        Ok(conn) => conn,
        Err(e) => {
            let _ = ready.send(Err(format!("connect to {address}: {e}")));
            return;
        }
    };
    let name = conn
        .unique_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let _ = ready.send(Ok(name));
    loop {
        match NextCommand(&mailbox).await {
            ServerCommand::Shutdown => break,
            ServerCommand::Emit {
                signal,
                id,
                arg,
                reply,
            } => {
                let sent = match arg {
                    SignalArg::Str(s) => {
                        conn.emit_signal(
                            None::<&str>,
                            NOTIFICATIONS_PATH,
                            NOTIFICATIONS_INTERFACE,
                            signal,
                            &(id, s.as_str()),
                        )
                        .await
                    }
                    SignalArg::U32(u) => {
                        conn.emit_signal(
                            None::<&str>,
                            NOTIFICATIONS_PATH,
                            NOTIFICATIONS_INTERFACE,
                            signal,
                            &(id, u),
                        )
                        .await
                    }
                };
                let _ = reply.send(sent.map_err(|e| e.to_string()));
            }
        }
    }
    let _ = conn.close().await;
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Calls `Notify` on `bus` from a fresh zbus connection, as a client would; returns the id.
/// For tests of the server itself and of code that inspects what was recorded.
pub fn send_notify(bus: &SessionBus, app_name: &str, summary: &str, body: &str) -> u32 {
    let address = bus.address.clone();
    let (app_name, summary, body) = (app_name.to_owned(), summary.to_owned(), body.to_owned());
    // Own thread: zbus::block_on panics if the caller is already inside a zbus runtime.
    thread::spawn(move || {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("client connect to private bus");
            let mut hints: HashMap<&str, Variant<'_>> = HashMap::new();
            hints.insert("category", Variant::from("email.arrived"));
            hints.insert("urgency", Variant::from(1u8));
            let reply = conn
                .call_method(
                    Some(NOTIFICATIONS_NAME),
                    NOTIFICATIONS_PATH,
                    Some(NOTIFICATIONS_INTERFACE),
                    "Notify",
                    &(
                        app_name.as_str(),
                        0u32,
                        "mail-unread",
                        summary.as_str(),
                        body.as_str(),
                        vec!["default", "Open"],
                        hints,
                        -1i32,
                    ),
                )
                .await
                .expect("call Notify");
            let id: u32 = reply.body().deserialize().expect("Notify reply is u32");
            id
        })
    })
    .join()
    .expect("notify client thread")
}

/// Calls `interface.method()` (no arguments) on `destination` at `path` from a fresh
/// connection to `bus` (on a thread of its own: zbus::block_on panics inside a zbus
/// runtime), and returns the reply's body, or the call's error.
pub fn call_no_args<T>(
    bus: &SessionBus,
    destination: &'static str,
    path: &'static str,
    interface: &'static str,
    method: &'static str,
) -> zbus::Result<T>
where
    T: for<'d> serde::Deserialize<'d> + zbus::Type + Send + 'static,
{
    let address = bus.address.clone();
    thread::spawn(move || {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await?;
            let reply = conn
                .call_method(Some(destination), path, Some(interface), method, &())
                .await?;
            reply.body().deserialize::<T>()
        })
    })
    .join()
    .expect("D-Bus client thread")
}

/// The unique name that owns `name` on `bus`, if any (asked from a fresh connection).
pub fn name_owner(bus: &SessionBus, name: &str) -> Option<String> {
    let address = bus.address.clone();
    let name = name.to_owned();
    thread::spawn(move || {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("client connect to private bus");
            let reply = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "GetNameOwner",
                    &(name.as_str(),),
                )
                .await;
            reply
                .ok()
                .and_then(|r| r.body().deserialize::<String>().ok())
        })
    })
    .join()
    .expect("name owner client thread")
}

/// How many connections to `bus` the process `pid` has open (asked from a fresh
/// connection, which is not counted unless it is `pid`'s).
pub fn connections_of(bus: &SessionBus, pid: u32) -> usize {
    let address = bus.address.clone();
    thread::spawn(move || {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("client connect to private bus");
            let call = |method: &'static str, arg: Option<String>| {
                let conn = conn.clone();
                async move {
                    let reply = match &arg {
                        Some(a) => {
                            conn.call_method(
                                Some("org.freedesktop.DBus"),
                                "/org/freedesktop/DBus",
                                Some("org.freedesktop.DBus"),
                                method,
                                &(a.as_str(),),
                            )
                            .await
                        }
                        None => {
                            conn.call_method(
                                Some("org.freedesktop.DBus"),
                                "/org/freedesktop/DBus",
                                Some("org.freedesktop.DBus"),
                                method,
                                &(),
                            )
                            .await
                        }
                    };
                    reply.ok()
                }
            };
            let names: Vec<String> = call("ListNames", None)
                .await
                .and_then(|r| r.body().deserialize().ok())
                .expect("ListNames");
            let mut count = 0;
            for name in names.into_iter().filter(|n| n.starts_with(':')) {
                let owner_pid: Option<u32> = call("GetConnectionUnixProcessID", Some(name))
                    .await
                    .and_then(|r| r.body().deserialize().ok());
                if owner_pid == Some(pid) {
                    count += 1;
                }
            }
            count
        })
    })
    .join()
    .expect("connection count client thread")
}
