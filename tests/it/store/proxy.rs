//! A TCP proxy between an S3 client and moto that holds one request in flight: the first whose
//! request line a test's predicate accepts is read whole (head and body) and kept until the test
//! releases it, then sent on; everything else passes straight through. Std threads only; it reads
//! HTTP/1.1 request framing (`Content-Length` or chunked), never answers itself.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which request line to hold.
pub type Hold = fn(&str) -> bool;

pub struct Proxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    held: Receiver<String>,
    release: Sender<()>,
    stopped: Arc<AtomicBool>,
}

struct Shared {
    upstream: String,
    hold: Hold,
    armed: AtomicBool,
    held: Mutex<Sender<String>>,
    release: Mutex<Receiver<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, hold: Hold) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (held_tx, held) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_start_matches("http://").to_owned(),
            hold,
            armed: AtomicBool::new(true),
            held: Mutex::new(held_tx),
            release: Mutex::new(release_rx),
        });
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || connect(client, &shared));
            }
        });
        Self {
            endpoint,
            held,
            release,
            stopped,
        }
    }

    /// Waits until a request is held; returns its head (request line and headers).
    pub fn wait_held(&self, timeout: Duration) -> String {
        self.held
            .recv_timeout(timeout)
            .expect("no request was held by the proxy")
    }

    /// Sends the held request on.
    pub fn release(&self) {
        let _ = self.release.send(());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.release();
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// Pipes one client connection to its own upstream connection.
fn connect(client: TcpStream, shared: &Shared) {
    let Ok(upstream) = TcpStream::connect(&shared.upstream) else {
        return;
    };
    let (Ok(mut answers), Ok(mut to_client)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = io::copy(&mut answers, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let mut requests = BufReader::new(client);
    let mut upstream = upstream;
    while let Ok(Some(request)) = read_request(&mut requests) {
        let text = String::from_utf8_lossy(&request);
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        let line = head.lines().next().unwrap_or_default();
        if (shared.hold)(line) && shared.armed.swap(false, Ordering::SeqCst) {
            let _ = shared.held.lock().unwrap().send(head);
            let _ = shared.release.lock().unwrap().recv();
        }
        if upstream.write_all(&request).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
}

/// One whole HTTP/1.1 request (head and body) as sent, or `None` at the end of the stream.
fn read_request(from: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut request = Vec::new();
    loop {
        let start = request.len();
        if from.read_until(b'\n', &mut request)? == 0 {
            return Ok(None);
        }
        if request[start..] == *b"\r\n" {
            break;
        }
    }
    let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let start = request.len();
            from.read_until(b'\n', &mut request)?;
            let size_line = String::from_utf8_lossy(&request[start..]).to_string();
            let size = size_line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size, 16).unwrap_or(0);
            read_exact_into(from, &mut request, size + 2)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(length) = header("content-length").and_then(|v| v.parse().ok()) {
        read_exact_into(from, &mut request, length)?;
    }
    Ok(Some(request))
}

fn read_exact_into(from: &mut impl Read, into: &mut Vec<u8>, bytes: usize) -> io::Result<()> {
    let start = into.len();
    into.resize(start + bytes, 0);
    from.read_exact(&mut into[start..])
}
