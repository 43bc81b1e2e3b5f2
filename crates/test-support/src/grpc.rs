//! The `switchyard.test.v1.Echo` gRPC test service (tonic), a launcher for it
//! and a client helper.
//!
//! Semantics (shared with `python/grpc_echo_server.py`, keep them in sync):
//! - `fail_code != 0`: answer with that status code and `fail_message`. For
//!   `ServerStream` the failure comes after the `count` replies (so a test
//!   can check trailers arriving after data); for the client/bidi streams it
//!   ends the call when that request is read.
//! - `delay_ms`: sleep before answering, and before each streamed reply.
//! - Every reply names the server instance in `server`.
//!
//! Messages up to [`MAX_MESSAGE_SIZE`] are accepted and sent, on both sides.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Response, Status, Streaming};

/// Generated messages, client and server (from `proto/switchyard/test/v1/echo.proto`).
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("switchyard.test.v1");
}

pub use pb::echo_client::EchoClient;
pub use pb::echo_server::{Echo, EchoServer};
pub use pb::{EchoReply, EchoRequest};

/// Largest message the test service and [`client`] accept or send (16 MiB),
/// well above tonic's 4 MiB default so multi-MiB messages can be tested.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;

/// The Echo service implementation; see the module docs for its semantics.
#[derive(Debug, Clone)]
pub struct EchoService {
    name: Arc<str>,
    requests: Arc<AtomicU64>,
    last_metadata: Arc<Mutex<Option<MetadataMap>>>,
    /// Every call fails at once with this code (a trailers-only answer).
    fail_all: Option<Code>,
}

impl EchoService {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into().into(),
            requests: Arc::new(AtomicU64::new(0)),
            last_metadata: Arc::new(Mutex::new(None)),
            fail_all: None,
        }
    }

    /// A service whose every call fails with `code`.
    pub fn failing(name: impl Into<String>, code: Code) -> Self {
        Self {
            fail_all: Some(code),
            ..Self::new(name)
        }
    }

    /// This service wrapped for tonic, with the large message limits.
    pub fn into_server(self) -> EchoServer<Self> {
        EchoServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    fn record<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .last_metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(request.metadata().clone());
        match self.fail_all {
            Some(code) => Err(Status::new(code, format!("{} is failing", self.name))),
            None => Ok(()),
        }
    }

    fn reply(&self, request: &EchoRequest, index: u32) -> EchoReply {
        EchoReply {
            message: request.message.clone(),
            payload: request.payload.clone(),
            index,
            server: self.name.to_string(),
        }
    }
}

/// The status a request asks for, if any.
fn requested_failure(request: &EchoRequest) -> Option<Status> {
    if request.fail_code == 0 {
        return None;
    }
    // Out-of-range codes become Unknown, like any gRPC peer would decode them.
    let code = Code::from(i32::try_from(request.fail_code).unwrap_or(i32::MAX));
    Some(Status::new(code, request.fail_message.clone()))
}

async fn delay(request: &EchoRequest) {
    if request.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.record(&request)?;
        let request = request.into_inner();
        delay(&request).await;
        if let Some(status) = requested_failure(&request) {
            return Err(status);
        }
        Ok(Response::new(self.reply(&request, 0)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        self.record(&request)?;
        let mut inbound = request.into_inner();
        let mut reply = EchoReply {
            server: self.name.to_string(),
            ..EchoReply::default()
        };
        while let Some(request) = inbound.message().await? {
            delay(&request).await;
            if let Some(status) = requested_failure(&request) {
                return Err(status);
            }
            reply.message.push_str(&request.message);
            reply.payload.extend_from_slice(&request.payload);
            reply.index += 1;
        }
        Ok(Response::new(reply))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.record(&request)?;
        let request = request.into_inner();
        let service = self.clone();
        // State: the next index, or None once the stream is over.
        let replies = futures_util::stream::unfold(Some(0u32), move |next| {
            let service = service.clone();
            let request = request.clone();
            async move {
                let index = next?;
                if index < request.count {
                    delay(&request).await;
                    return Some((Ok(service.reply(&request, index)), Some(index + 1)));
                }
                // After the replies: end with the requested status, if any.
                requested_failure(&request).map(|status| (Err(status), None))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.record(&request)?;
        let inbound = request.into_inner();
        let service = self.clone();
        // State: the inbound stream and the next index, or None once ended.
        let replies = futures_util::stream::unfold(Some((inbound, 0u32)), move |state| {
            let service = service.clone();
            async move {
                let (mut inbound, index) = state?;
                match inbound.message().await {
                    Ok(Some(request)) => {
                        delay(&request).await;
                        match requested_failure(&request) {
                            Some(status) => Some((Err(status), None)),
                            None => Some((
                                Ok(service.reply(&request, index)),
                                Some((inbound, index + 1)),
                            )),
                        }
                    }
                    Ok(None) => None,
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// A tonic server running [`EchoService`] on loopback. Dropping it stops the
/// server abruptly; [`GrpcBackend::shutdown`] drains in-flight calls first.
#[derive(Debug)]
pub struct GrpcBackend {
    service: EchoService,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl GrpcBackend {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start(name: impl Into<String>) -> GrpcBackend {
        Self::start_on(name, (Ipv4Addr::LOCALHOST, 0).into()).await
    }

    /// Starts on `addr` (e.g. the address of a previous instance, to
    /// simulate a restart). Panics if it cannot be bound.
    pub async fn start_on(name: impl Into<String>, addr: SocketAddr) -> GrpcBackend {
        Self::serve(EchoService::new(name), addr).await
    }

    /// Starts an instance whose every call fails with `code`.
    pub async fn start_failing(name: impl Into<String>, code: Code) -> GrpcBackend {
        Self::serve(
            EchoService::failing(name, code),
            (Ipv4Addr::LOCALHOST, 0).into(),
        )
        .await
    }

    async fn serve(service: EchoService, addr: SocketAddr) -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| {
                panic!("binding gRPC backend {:?} on {addr}: {err}", service.name)
            });
        let addr = listener
            .local_addr()
            .expect("reading the address of a freshly bound listener");
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = Server::builder()
            .add_service(service.clone().into_server())
            .serve_with_incoming_shutdown(incoming, async {
                // A dropped sender also means stop.
                let _ = stop.await;
            });
        Self {
            service,
            addr,
            shutdown: Some(shutdown),
            task: Some(tokio::spawn(server)),
        }
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the form tonic endpoints take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// RPCs received (each stream counts once).
    pub fn requests(&self) -> u64 {
        self.service.requests.load(Ordering::Relaxed)
    }

    /// Metadata (request headers) of the latest RPC.
    pub fn last_metadata(&self) -> Option<MetadataMap> {
        self.service
            .last_metadata
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Graceful stop: refuses new connections, lets in-flight calls finish,
    /// then returns.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => panic!("gRPC backend {:?} failed: {err}", self.service.name),
                Err(err) => panic!("gRPC backend {:?} task failed: {err}", self.service.name),
            }
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A connected Echo client for `addr` with the large message limits; panics
/// if the connection fails.
pub async fn client(addr: SocketAddr) -> EchoClient<Channel> {
    try_client(addr)
        .await
        .unwrap_or_else(|err| panic!("connecting gRPC client to {addr}: {err}"))
}

/// Like [`client`], returning the connection error.
pub async fn try_client(addr: SocketAddr) -> Result<EchoClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(client_for(channel))
}

/// Wraps any channel (e.g. a lazily connecting one) with the large limits.
pub fn client_for(channel: Channel) -> EchoClient<Channel> {
    EchoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}
