//! A TCP proxy the test can cut: simulates the database becoming unreachable without
//! touching the machine's shared Postgres.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The address of the test database's server, to put a proxy in front of.
pub async fn server_of(db: &iotpay_devtools::testing::TestDatabase) -> SocketAddr {
    let (host, port) = (db.options.get_host(), db.options.get_port());
    tokio::net::lookup_host(format!("{host}:{port}")).await.unwrap().next().unwrap()
}

/// The test database's connection options, through a proxy listening on `proxy`.
pub fn through(db: &iotpay_devtools::testing::TestDatabase, proxy: SocketAddr) -> sqlx::postgres::PgConnectOptions {
    db.options.clone().host("127.0.0.1").port(proxy.port())
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (open2, links2) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !open2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        TcpProxy { addr, open, links }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
