//! The XenoServer gRPC service: thin translators between protobuf and the [`Server`] core.

use crate::server::Server;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::server::v1::xeno_server_server::XenoServer;
use xeno_schemas::proto::taskmanager::v1 as tm;

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

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SessionEvent, Status>> + Send>>;

fn session_event(event: tm::DomainEvent) -> Option<pb::SessionEvent> {
    use pb::session_event::Event;
    use tm::domain_event::Event as Domain;
    let event = match event.event? {
        Domain::Output(chunk) => Event::Output(chunk),
        Domain::TaskStarted(started) => Event::TaskStarted(pb::TaskStarted {
            task_id: started.task_id,
            name: String::new(),
        }),
        Domain::TaskEnded(ended) => Event::TaskEnded(pb::TaskEnded {
            task_id: ended.task_id,
            exit: ended.exit,
        }),
        Domain::Dropped(dropped) => Event::Dropped(pb::OutputDropped {
            task_id: dropped.task_id,
            bytes: dropped.bytes,
            offset: dropped.offset,
            reason: dropped.reason,
        }),
        Domain::Destroyed(_) => return None,
    };
    Some(pb::SessionEvent { event: Some(event) })
}

#[tonic::async_trait]
impl XenoServer for ServerService {
    type WatchSessionStream = EventStream;

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
        let events = session.events.subscribe();
        let ended = session.ended.borrow().clone();
        let output = session
            .task_manager
            .stream_output(Request::new(tm::StreamOutputRequest {
                domain_id: request.session_id.clone(),
                from_offset: request.from_offset,
                follow: request.follow && ended.is_none(),
            }))
            .await;
        let output: EventStream = match output {
            Ok(stream) => Box::pin(stream.into_inner().filter_map(|item| match item {
                Ok(event) => session_event(event).map(Ok),
                Err(status) => Some(Err(status)),
            })),
            // An ended session's domain is gone: only the end is left to tell.
            Err(status) if status.code() == tonic::Code::NotFound && ended.is_some() => {
                Box::pin(tokio_stream::empty())
            }
            Err(status) => return Err(status),
        };
        if let Some(reason) = ended {
            let charged = session.live.lock().await.billing.charged_minor;
            let end = pb::SessionEvent {
                event: Some(pb::session_event::Event::SessionEnded(pb::SessionEnded {
                    reason,
                    charged_total: Some(xeno_schemas::proto::common::v1::Money {
                        currency: session.row.currency.clone(),
                        amount_minor: charged,
                    }),
                })),
            };
            return Ok(Response::new(Box::pin(
                output.chain(tokio_stream::once(Ok(end))),
            )));
        }
        if !request.follow {
            return Ok(Response::new(output));
        }
        let session_events =
            tokio_stream::wrappers::BroadcastStream::new(events).filter_map(|item| match item {
                Ok(event) => Some(Ok(event)),
                // A watcher too slow for the event buffer skips what it missed.
                Err(_) => None,
            });
        let merged = output.merge(session_events);
        // Stop after the session's end has been delivered.
        let mut done = false;
        let stream = merged.take_while(move |item| {
            if done {
                return false;
            }
            if let Ok(pb::SessionEvent {
                event: Some(pb::session_event::Event::SessionEnded(_)),
            }) = item
            {
                done = true;
            }
            true
        });
        Ok(Response::new(Box::pin(stream)))
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
