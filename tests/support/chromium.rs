//! A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol: a small
//! client of the few commands the page test needs (open a tab, navigate and wait for the
//! load, read the DOM, type, press a key, read cookies, take a screenshot). Chromium missing
//! is a test failure that says how to install it, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    /// Events read while waiting for a command's answer, kept for `wait_event`.
    events: Vec<Value>,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "chromium is not installed (looked for chromium and chromium-browser in /usr/bin and \
         /usr/local/bin); run tests/setup.sh, which installs Debian's chromium package"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and connects to it.
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile directory");
        let port = free_port();
        let log = profile.path().join("chromium.log");
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,2000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("data").display()
            ))
            .arg(format!("--remote-debugging-port={port}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("chromium log"))
            .spawn()
            .expect("start chromium");
        // The browser's websocket address, once its DevTools endpoint answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let answer = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/json/version"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(version) = answer.json::<Value>().await
                && let Some(url) = version["webSocketDebuggerUrl"].as_str()
            {
                break url.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "chromium's DevTools endpoint did not answer in 30 s; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to chromium's DevTools websocket");
        Browser {
            child,
            socket,
            next_id: 0,
            events: Vec::new(),
            log,
            _profile: profile,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn read(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("chromium answered nothing for 60 s")
                .expect("chromium closed the DevTools connection")
                .expect("DevTools websocket error");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("DevTools sent JSON");
            }
        }
    }

    /// Sends `method` (to a tab's `session`, or the browser) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .expect("send a DevTools command");
        loop {
            let message = self.read().await;
            if message["id"] == id {
                assert!(
                    message.get("error").is_none(),
                    "{method}: {}",
                    message["error"]
                );
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    /// Waits for event `method` of `session`; earlier events of it are forgotten first by
    /// [`Browser::forget_events`].
    pub async fn wait_event(&mut self, session: &str, method: &str) -> Value {
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["method"] == method && e["sessionId"] == session)
            {
                return self.events.remove(i);
            }
            let message = self.read().await;
            self.events.push(message);
        }
    }

    pub fn forget_events(&mut self) {
        self.events.clear();
    }

    /// A new tab; returns its session id.
    pub async fn new_tab(&mut self) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_string();
        self.call(Some(&session), "Page.enable", json!({})).await;
        self.call(
            Some(&session),
            "Page.setLifecycleEventsEnabled",
            json!({"enabled": true}),
        )
        .await;
        self.call(Some(&session), "Network.enable", json!({})).await;
        session
    }

    /// Navigates and waits for that navigation's load event (not an earlier document's: the
    /// page reloads itself every 10 s); returns how long that took.
    pub async fn navigate(&mut self, session: &str, url: &str) -> Duration {
        self.forget_events();
        let started = Instant::now();
        let answer = self
            .call(Some(session), "Page.navigate", json!({"url": url}))
            .await;
        assert!(
            answer.get("errorText").is_none(),
            "navigate {url}: {answer}"
        );
        let loader = answer["loaderId"].clone();
        loop {
            let event = self.wait_event(session, "Page.lifecycleEvent").await;
            if event["params"]["name"] == "load" && event["params"]["loaderId"] == loader {
                break;
            }
        }
        started.elapsed()
    }

    /// The current document as HTML.
    pub async fn html(&mut self, session: &str) -> String {
        let document = self
            .call(Some(session), "DOM.getDocument", json!({"depth": 0}))
            .await;
        let html = self
            .call(
                Some(session),
                "DOM.getOuterHTML",
                json!({"nodeId": document["root"]["nodeId"]}),
            )
            .await;
        html["outerHTML"].as_str().unwrap_or_default().to_string()
    }

    /// Focuses the element `selector` matches and types `text` into it, as a person would.
    pub async fn type_into(&mut self, session: &str, selector: &str, text: &str) {
        let document = self
            .call(Some(session), "DOM.getDocument", json!({"depth": 0}))
            .await;
        let node = self
            .call(
                Some(session),
                "DOM.querySelector",
                json!({"nodeId": document["root"]["nodeId"], "selector": selector}),
            )
            .await;
        assert_ne!(node["nodeId"], 0, "no element matches {selector}");
        self.call(
            Some(session),
            "DOM.focus",
            json!({"nodeId": node["nodeId"]}),
        )
        .await;
        self.call(Some(session), "Input.insertText", json!({"text": text}))
            .await;
    }

    /// Presses Enter in the focused field (submits its form) and waits for the next load.
    pub async fn press_enter(&mut self, session: &str) {
        self.forget_events();
        for kind in ["keyDown", "keyUp"] {
            self.call(
                Some(session),
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Enter", "code": "Enter",
                       "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13, "text": "\r"}),
            )
            .await;
        }
        self.wait_event(session, "Page.loadEventFired").await;
    }

    /// The cookies the browser holds for `url`.
    pub async fn cookies(&mut self, session: &str, url: &str) -> Vec<Value> {
        self.call(Some(session), "Network.getCookies", json!({"urls": [url]}))
            .await["cookies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG screenshot of the tab, base64 as DevTools sends it.
    pub async fn screenshot(&mut self, session: &str) -> String {
        self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        )
        .await["data"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
