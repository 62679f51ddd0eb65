//! Loopback addresses and ports: everything in these tests talks to 127.0.0.1 only.

use tokio::net::TcpStream;

use super::time::ms;

/// The loopback host every socket in these tests uses.
pub const HOST: &str = "127.0.0.1";

/// A loopback port that was free a moment ago (bind :0, read, drop); never the same port
/// twice in one test process: two calls in a row may otherwise get the same port back from the
/// kernel (the first socket is closed at once), and a listener and an admin address would then
/// clash.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind((HOST, 0)).expect("bind 127.0.0.1:0").local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// True when a TCP connect to the loopback port succeeds within 500 ms.
pub async fn port_open(port: u16) -> bool {
    matches!(tokio::time::timeout(ms(500), TcpStream::connect((HOST, port))).await, Ok(Ok(_)))
}
