//! A loopback TCP proxy the test controls: `cut()` drops every connection through it and
//! refuses new ones (as a network partition would, seen from the client: its requests time
//! out or fail), `restore()` lets traffic through again. Used to cut one process off etcd
//! while everything else still reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    listen: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: connections opened before it close.
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let listen = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let (cut, epoch, accepted) = (Arc::clone(&cut), epoch.clone(), Arc::clone(&accepted));
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let mut closed = epoch.subscribe();
                    let opened = *closed.borrow_and_update();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = async {
                                while closed.changed().await.is_ok() {
                                    if *closed.borrow() != opened {
                                        return;
                                    }
                                }
                            } => {}
                        }
                    });
                }
            })
        };
        Proxy {
            listen,
            cut,
            epoch,
            accepted,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: the endpoint to give the client that is to be cut.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Drops every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Connections let through so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
