//! A process out of file descriptors: accepting fails with EMFILE, the
//! accept loop pauses instead of failing or spinning, and it serves again
//! once descriptors are free. Alone in its test binary, since it lowers the
//! descriptor limit of the whole process.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{TestServer, get, http1, quick, text_of};
use rlimit::Resource;
use tokio::net::TcpStream;

#[tokio::test]
async fn accepting_resumes_after_the_process_ran_out_of_descriptors() {
    let server = TestServer::start(quick(1000)).await;
    let (soft, hard) = Resource::NOFILE.get().expect("limit readable");
    let open = std::fs::read_dir("/proc/self/fd").expect("/proc").count() as u64;
    Resource::NOFILE
        .set(open + 40, hard)
        .expect("the soft limit can be lowered");
    // Clients take descriptors until none is left; the server's accepts of
    // the last ones fail (EMFILE) and those wait in the backlog.
    let mut clients = Vec::new();
    while let Ok(Ok(c)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(server.addr)).await
    {
        clients.push(c);
        assert!(clients.len() < 100, "the lowered limit was not reached");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    // Descriptors are free again: the server accepts and answers.
    let answered = async {
        loop {
            let (mut sender, _) = http1(server.addr).await;
            if let Ok(resp) = sender.send_request(get(server.addr, "/")).await {
                return text_of(resp).await;
            }
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(10), answered).await;
    Resource::NOFILE.set(soft, hard).expect("limit restored");
    assert_eq!(text.expect("served again after EMFILE"), "ok");
}
