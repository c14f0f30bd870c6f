//! A raw application client: the application protocol's frames, sent one by one, for tests that
//! must send what `khttp-app` never would (a streamed answer that breaks its own length).

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;

use khttp_proto::reply::{AttachRow, RequestRow};
use khttp_proto::{Request, Status, encode_request, read_rows};

/// One connection to khttpd's application socket.
pub struct RawApp {
    stream: BufReader<UnixStream>,
}

impl RawApp {
    /// Connects to the application socket at `path`.
    #[must_use]
    pub fn connect(path: &Path) -> Self {
        Self {
            stream: BufReader::new(UnixStream::connect(path).expect("the application socket")),
        }
    }

    /// One call: the reply's status and bytes.
    pub fn call(&mut self, req: &Request<'_>, direct: &[u8]) -> (Status, Vec<u8>) {
        let mut input = Vec::new();
        let code = encode_request(req, &mut input);
        let (status, out) =
            khttp_local::socket::call(&mut self.stream, code, &input, direct, u32::MAX)
                .expect("a reply");
        (Status::from_u32(status).expect("a known status"), out)
    }

    /// Attaches to queue `name` for `prefixes`; its id.
    pub fn attach(&mut self, name: &str, prefixes: &[&str]) -> u32 {
        let req = Request::QueueAttach {
            name,
            prefixes: prefixes.to_vec(),
        };
        let (status, out) = self.call(&req, &[]);
        assert_eq!(status, Status::Ok, "attach");
        read_rows::<AttachRow>(&out).expect("an attach row")[0].queue
    }

    /// Asks for the next request of `queue` and does not wait for it (then an application
    /// may die while its receive waits).
    pub fn post_receive(&mut self, queue: u32) {
        let req = Request::QueueReceive {
            queue,
            body_max: 0,
            max_requests: 1,
        };
        let mut input = Vec::new();
        let code = encode_request(&req, &mut input);
        khttp_local::socket::post(&mut self.stream, code, &input, &[]).expect("a receive sent");
    }

    /// Waits for the next request of `queue`; its id and head.
    pub fn receive(&mut self, queue: u32) -> (u64, String) {
        let req = Request::QueueReceive {
            queue,
            body_max: 0,
            max_requests: 1,
        };
        let (status, out) = self.call(&req, &[]);
        assert_eq!(status, Status::Ok, "receive");
        let rows = read_rows::<RequestRow<'_>>(&out).expect("a request row");
        (
            rows[0].id,
            String::from_utf8_lossy(rows[0].head).into_owned(),
        )
    }
}
