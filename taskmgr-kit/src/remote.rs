//! The task manager plugin interface, in Rust, and reaching a plugin in another process.
//!
//! The contract is the `xenoserve.taskmanager.v1.TaskManager` gRPC service (see
//! `schemas/proto/xenoserve/taskmanager/v1/taskmanager.proto` for every call, error and usage
//! rule). Its generated server trait, [`TaskManager`], is also the Rust trait: a built-in task
//! manager implements it and the environment manager calls it in process; an external plugin
//! implements the same trait in its own process, serves it with [`serve_unix`] or over TCP, and
//! the environment manager reaches it through [`RemoteTaskManager`], which implements the trait
//! by forwarding. Either way the environment manager holds a [`DynTaskManager`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use xeno_taskmgr_kit::{DynTaskManager, RemoteTaskManager};
//! let plugin: DynTaskManager = std::sync::Arc::new(RemoteTaskManager::connect("unix:/run/xeno/process.sock").await?);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::proto::taskmanager::v1::task_manager_client::TaskManagerClient;
pub use xeno_schemas::proto::taskmanager::v1::task_manager_server::{
    TaskManager, TaskManagerServer,
};

/// The stream of a domain's output and task events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::DomainEvent, Status>> + Send>>;

/// A task manager as the environment manager holds it: built in, or a remote plugin.
pub type DynTaskManager = Arc<dyn TaskManager<StreamOutputStream = EventStream>>;

/// Largest message between the environment manager and a plugin: task payloads travel in
/// DeployTask, so this bounds a task's program and files together.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// A task manager in another process, reached over a Unix socket or TCP.
pub struct RemoteTaskManager {
    client: TaskManagerClient<Channel>,
}

impl RemoteTaskManager {
    /// Connects to `address`: `unix:/path/to/socket`, or `http://host:port` for TCP.
    pub async fn connect(address: &str) -> Result<RemoteTaskManager, tonic::transport::Error> {
        let channel = match address.strip_prefix("unix:") {
            Some(path) => {
                let path = path.to_owned();
                Endpoint::from_static("http://task-manager.invalid")
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await?
            }
            None => Endpoint::from_shared(address.to_owned())?.connect().await?,
        };
        let client = TaskManagerClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Ok(RemoteTaskManager { client })
    }
}

#[tonic::async_trait]
impl TaskManager for RemoteTaskManager {
    type StreamOutputStream = EventStream;

    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        self.client
            .clone()
            .get_capabilities(request.into_inner())
            .await
    }

    async fn create_domain(
        &self,
        request: Request<pb::CreateDomainRequest>,
    ) -> Result<Response<pb::CreateDomainResponse>, Status> {
        self.client
            .clone()
            .create_domain(request.into_inner())
            .await
    }

    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        self.client.clone().deploy_task(request.into_inner()).await
    }

    async fn stream_output(
        &self,
        request: Request<pb::StreamOutputRequest>,
    ) -> Result<Response<Self::StreamOutputStream>, Status> {
        let stream = self
            .client
            .clone()
            .stream_output(request.into_inner())
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(stream) as EventStream))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        self.client.clone().report_usage(request.into_inner()).await
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        self.client.clone().stop_task(request.into_inner()).await
    }

    async fn destroy_domain(
        &self,
        request: Request<pb::DestroyDomainRequest>,
    ) -> Result<Response<pb::DestroyDomainResponse>, Status> {
        self.client
            .clone()
            .destroy_domain(request.into_inner())
            .await
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        self.client.clone().inspect_task(request.into_inner()).await
    }
}

/// Serves a task manager on a Unix socket until `shutdown` completes: what an external plugin's
/// `main` calls.
pub async fn serve_unix<T: TaskManager>(
    task_manager: T,
    socket: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), std::io::Error> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    let service = TaskManagerServer::new(task_manager)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    tonic::transport::Server::builder()
        .layer(xeno_daemon::grpc::InvalidRequests)
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(std::io::Error::other)
}
