//! Dynamic batching: images queue in a bounded channel; one thread takes the first, waits up to the
//! delay for more (up to the batch size), and runs them through the engine's batched path together, so
//! concurrent requests share the weight traffic of the late layers as `predict --batch` does.

use crate::metrics::Metrics;
use crate::model::Model;
use effnet_engine::FeatureMap;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a request wants from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The classifier's logits.
    Logits,
    /// The pooled features.
    Embedding,
}

/// The engine's answer for one image.
pub type Answer = Result<Vec<f32>, String>;

struct Job {
    image: FeatureMap,
    output: Output,
    reply: oneshot::Sender<Answer>,
}

/// The queue was full.
#[derive(Debug)]
pub struct QueueFull;

/// The queue in front of the engine.
pub struct Batcher {
    sender: Mutex<Option<SyncSender<Job>>>,
}

impl Batcher {
    /// Starts the batching thread for `model`.
    pub fn start(
        model: Arc<Model>,
        metrics: Arc<Metrics>,
        max_batch: usize,
        max_delay: Duration,
        queue: usize,
    ) -> Self {
        let (sender, receiver) = sync_channel::<Job>(queue);
        std::thread::Builder::new()
            .name("effnet-batcher".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let deadline = Instant::now() + max_delay;
                    let mut jobs = vec![first];
                    while jobs.len() < max_batch {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match receiver.recv_timeout(left) {
                            Ok(job) => jobs.push(job),
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break
                            }
                        }
                    }
                    metrics.queue_depth.dec_by(jobs.len() as i64);
                    metrics.batch_size.observe(jobs.len() as f64);
                    run_batch(&model, jobs);
                }
            })
            .expect("the batching thread starts");
        Self {
            sender: Mutex::new(Some(sender)),
        }
    }

    /// Queues `image`, or refuses it when the queue is full (or closed).
    pub fn submit(
        &self,
        image: FeatureMap,
        output: Output,
        metrics: &Metrics,
    ) -> Result<oneshot::Receiver<Answer>, QueueFull> {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender.lock().expect("not poisoned").clone();
        let sender = sender.ok_or(QueueFull)?;
        // Counted before it is sent, so that the batcher never takes it off a count that lacks it.
        metrics.queue_depth.inc();
        match sender.try_send(Job {
            image,
            output,
            reply,
        }) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                metrics.queue_depth.dec();
                Err(QueueFull)
            }
        }
    }

    /// Lets the batching thread finish what is queued and stop.
    pub fn close(&self) {
        self.sender.lock().expect("not poisoned").take();
    }
}

/// Runs one batch and answers each job.
fn run_batch(model: &Model, mut jobs: Vec<Job>) {
    let images: Vec<FeatureMap> = jobs
        .iter_mut()
        .map(|j| std::mem::replace(&mut j.image, FeatureMap::new(&[], 0, 0, 0)))
        .collect();
    let features = model.engine.pooled_features_batch(&images);
    for (job, features) in jobs.into_iter().zip(features) {
        let answer = features
            .map(|f| match job.output {
                Output::Logits => model.engine.classify(&f),
                Output::Embedding => f,
            })
            .map_err(|e| e.to_string());
        // A request that timed out has dropped its receiver: nothing to answer.
        let _ = job.reply.send(answer);
    }
}
