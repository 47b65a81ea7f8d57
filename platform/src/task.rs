//! Tasks owned by whoever holds their handle.

/// A task aborted when its holder is dropped: an error, a cancelled caller or a stopped service
/// leaves nothing running behind it.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Waits for the task to end by itself.
    pub async fn finish(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
