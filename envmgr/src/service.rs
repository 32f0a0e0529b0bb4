//! The XenoServer gRPC service: thin translators between protobuf and the [`Server`] core.

use crate::server::Server;
use crate::watch::{self, SessionEvents};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::server::v1::xeno_server_server::XenoServer;

/// Largest request the transport decodes. DeployTask carries payloads: the bound is well above
/// the configured payload limit so that the server itself answers an oversized deployment with
/// a precise RESOURCE_EXHAUSTED naming the limit; only requests far beyond it are cut off by
/// the transport (OUT_OF_RANGE).
pub fn message_bytes_max(server: &Server) -> usize {
    usize::try_from(server.config.limits.payload_bytes_max)
        .unwrap_or(usize::MAX / 4)
        .saturating_mul(2)
        .saturating_add(1 << 20)
}

/// The gRPC service.
pub struct ServerService {
    server: Arc<Server>,
    status: Arc<dyn Fn() -> pb::QueryStatusResponse + Send + Sync>,
}

impl ServerService {
    /// A service over `server`; `status` builds the status answer (with the signed advertisement).
    pub fn new(
        server: Arc<Server>,
        status: Arc<dyn Fn() -> pb::QueryStatusResponse + Send + Sync>,
    ) -> Self {
        ServerService { server, status }
    }
}

#[tonic::async_trait]
impl XenoServer for ServerService {
    type WatchSessionStream = SessionEvents;

    async fn query_xeno_server_status(
        &self,
        request: Request<pb::QueryStatusRequest>,
    ) -> Result<Response<pb::QueryStatusResponse>, Status> {
        self.server.trusted.client(&request)?;
        Ok(Response::new((self.status)()))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = self.server.trusted.client(&request)?;
        let request = request.into_inner();
        self.server
            .create_session(
                &caller,
                &request.requirements_xml,
                &request.purchase_order_xml,
            )
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        let caller = self.server.trusted.client(&request)?;
        let request = request.into_inner();
        let task_id = self
            .server
            .deploy(
                &caller,
                &request.session_id,
                &request.task_xml,
                request.payloads,
            )
            .await?;
        Ok(Response::new(pb::DeployTaskResponse { task_id }))
    }

    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let caller = self.server.trusted.client(&request)?;
        let request = request.into_inner();
        let session = self.server.watchable(&caller, &request.session_id)?;
        let events = watch::events(&session, request.from_offset, request.follow).await?;
        Ok(Response::new(events))
    }

    async fn task_status(
        &self,
        request: Request<pb::TaskStatusRequest>,
    ) -> Result<Response<pb::TaskStatusResponse>, Status> {
        let caller = self.server.trusted.client(&request)?;
        let request = request.into_inner();
        self.server
            .task_status(&caller, &request.session_id, &request.task_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn destroy_session(
        &self,
        request: Request<pb::DestroySessionRequest>,
    ) -> Result<Response<pb::DestroySessionResponse>, Status> {
        let caller = self.server.trusted.client(&request)?;
        self.server
            .destroy(&caller, &request.into_inner().session_id)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = self.server.trusted.client(&request)?;
        let sessions = self.server.list(&caller).await?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }
}
