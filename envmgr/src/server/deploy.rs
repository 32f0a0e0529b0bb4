//! DeployTask and TaskStatus: a task's id reserved, its payloads checked off the async
//! workers, the task handed to the session's task manager and recorded.

use super::Server;
use crate::error::ServerError;
use crate::identity::ClientId;
use crate::session::now_ms;
use crate::store::TaskRow;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_taskmgr_kit::payload;

impl Server {
    /// DeployTask.
    pub async fn deploy(
        &self,
        caller: &ClientId,
        session_id: &str,
        task_xml: &str,
        payloads: Vec<common::Payload>,
    ) -> Result<String, ServerError> {
        let session = self.session_for(session_id, caller)?;
        if let Some(reason) = session.ended.borrow().clone() {
            return Err(ServerError::precondition(format!(
                "the session has ended: {reason}"
            )));
        }
        let total: u64 = payloads.iter().map(|p| p.data.len() as u64).sum();
        if total > self.config.limits.payload_bytes_max {
            return Err(ServerError::exhausted(format!(
                "payloads total {total} bytes; this server takes at most {}",
                self.config.limits.payload_bytes_max
            )));
        }
        let task = TaskDescription::parse(task_xml.as_bytes())
            .map_err(|errors| ServerError::invalid(format!("task: {errors}")))?;
        // Hashing up to `payload_bytes_max` takes a while: off the async workers.
        let limit = self.config.limits.payload_bytes_max;
        let named: Vec<String> = task
            .payload_hashes()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let payloads = tokio::task::spawn_blocking(move || {
            let verified = payload::verify(payloads, limit)?;
            let named: Vec<&str> = named.iter().map(String::as_str).collect();
            payload::check_named(&named, &verified)?;
            Ok::<_, payload::PayloadError>(
                verified
                    .into_iter()
                    .map(|(sha256, data)| common::Payload {
                        sha256,
                        data: Vec::from(data),
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|_| ServerError::internal("payload check"))?
        .map_err(|error| ServerError::invalid(error.to_string()))?;
        // The id is taken under the lock before the task manager is asked, so deploys racing
        // into one session get distinct ids.
        let task_id = session
            .reserve_task_id(self.config.defaults.tasks_max as usize * 16)
            .map_err(ServerError::exhausted)?;
        let program = match &task.program {
            Program::WasmModule { .. } => "WasmModule",
            Program::WasmComponent { .. } => "WasmComponent",
            Program::Executable { .. } => "Executable",
            Program::ExecutablePath(_) => "ExecutablePath",
        };
        let deployed = session
            .task_manager
            .deploy_task(tonic::Request::new(tm::DeployTaskRequest {
                domain_id: session_id.to_owned(),
                task_id: task_id.clone(),
                task_xml: task_xml.to_owned(),
                payloads,
            }))
            .await;
        if let Err(status) = deployed {
            // A refused task leaves its id for the next deploy, unless the task manager
            // already holds a task by that id (one deployed before a crash this server did not
            // record): that id is spent.
            if status.code() != tonic::Code::AlreadyExists {
                session.release_task_id(&task_id);
            }
            return Err(status.into());
        }
        let row = TaskRow {
            task_id: task_id.clone(),
            name: task.name.clone().unwrap_or_else(|| task_id.clone()),
            program: program.to_owned(),
        };
        session
            .tasks
            .lock()
            .map_err(|_| ServerError::internal("tasks lock"))?
            .push(row.clone());
        let id = session_id.to_owned();
        self.blocking(move |store| store.insert_task(&id, &row, now_ms()))
            .await?;
        Ok(task_id)
    }

    /// TaskStatus.
    pub async fn task_status(
        &self,
        caller: &ClientId,
        session_id: &str,
        task_id: &str,
    ) -> Result<pb::TaskStatusResponse, ServerError> {
        let session = self.session_for(session_id, caller)?;
        let inspected = session
            .task_manager
            .inspect_task(tonic::Request::new(tm::InspectTaskRequest {
                domain_id: session_id.to_owned(),
                task_id: task_id.to_owned(),
            }))
            .await?
            .into_inner();
        Ok(pb::TaskStatusResponse {
            task_id: task_id.to_owned(),
            state: inspected.state,
            exit: inspected.exit,
            usage: inspected.usage,
            output_dropped_bytes: inspected.output_dropped_bytes,
            output_dropped_reason: inspected.output_dropped_reason,
        })
    }
}
