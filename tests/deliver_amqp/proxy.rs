//! [`Proxy`]: a TCP proxy between weir and the broker that the test can
//! cut, to take the broker away from weir without touching the machine's
//! broker.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Listens on 127.0.0.1:0 and forwards each connection to the broker.
/// While cut, it drops every open connection and closes each new one as
/// soon as it is accepted, like a broker that went away.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Starts the proxy on `runtime`, forwarding to `upstream`.
    pub fn start(runtime: &tokio::runtime::Runtime, upstream: SocketAddr) -> Self {
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's address");
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let switch = cut.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *switch.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, switch.subscribe()));
            }
        });
        Self { addr, cut }
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Copies bytes both ways until either side closes or the proxy is cut.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
    // Dropping both streams closes both connections.
}
