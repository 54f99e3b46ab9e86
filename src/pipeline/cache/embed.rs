//! Sentence embeddings for the semantic cache: a local ONNX
//! sentence-transformer through fastembed with ONNX Runtime loaded from a
//! shared library (`kind = "local"`), or a model server's `/v1/embeddings`
//! (`kind = "upstream"`). Used only on the embedding thread and by
//! `sluice cache eval`, never on a worker.

use super::CacheError;
use crate::config::snapshot::EmbedderSettings;
use std::path::Path;
use std::time::Duration;

/// Longest input in tokens; longer questions are truncated (the model's
/// own limit for all-MiniLM-L6-v2 is 256 word pieces).
const MAX_TOKENS: usize = 256;

pub enum Embedder {
    Local(Box<fastembed::TextEmbedding>),
    Upstream(UpstreamEmbedder),
}

pub struct UpstreamEmbedder {
    upstream: Box<crate::upstream::UpstreamSpec>,
    /// The model name the server knows.
    model: String,
}

impl Embedder {
    pub fn load(settings: &EmbedderSettings) -> Result<Self, CacheError> {
        match settings {
            EmbedderSettings::Local {
                model_dir,
                onnxruntime,
            } => load_local(model_dir, onnxruntime),
            EmbedderSettings::Upstream { upstream, model } => {
                Ok(Embedder::Upstream(UpstreamEmbedder {
                    upstream: upstream.clone(),
                    model: model.clone(),
                }))
            }
        }
    }

    /// One vector per text, L2-normalized (so a dot product is the cosine).
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, CacheError> {
        let texts: Vec<&str> = texts.iter().map(|t| question_core(t)).collect();
        let texts = &texts[..];
        let mut vectors = match self {
            Embedder::Local(model) => model
                .embed(texts, Some(texts.len().max(1)))
                .map_err(|e| CacheError::Embed(e.to_string()))?,
            Embedder::Upstream(up) => up.embed(texts)?,
        };
        if vectors.len() != texts.len() {
            return Err(CacheError::Embed(format!(
                "{} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        for v in &mut vectors {
            normalize(v);
        }
        Ok(vectors)
    }
}

/// The text embedded: without surrounding whitespace and final
/// punctuation, which move small models' vectors (all-MiniLM-L6-v2 puts
/// "What is the capital of France?" at 0.905 of the same words without
/// the question mark) without changing what is asked.
pub fn question_core(text: &str) -> &str {
    text.trim().trim_end_matches(|c: char| {
        matches!(c, '?' | '!' | '.' | ':' | ';' | '…') || c.is_whitespace()
    })
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two normalized vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn load_local(model_dir: &Path, onnxruntime: &Path) -> Result<Embedder, CacheError> {
    let read = |name: &str| {
        let path = model_dir.join(name);
        std::fs::read(&path).map_err(|e| CacheError::Model(format!("{}: {e}", path.display())))
    };
    // ONNX Runtime is loaded once per process; a second load (a reload
    // with the same library, or eval after serve in tests) is a no-op.
    static RUNTIME: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            ort::init_from(onnxruntime)
                .map(|builder| {
                    builder.commit();
                })
                .map_err(|e| format!("{}: {e}", onnxruntime.display()))
        })
        .clone()
        .map_err(CacheError::Model)?;
    let onnx = read("model.onnx")?;
    let tokenizer = fastembed::TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    };
    let model = fastembed::UserDefinedEmbeddingModel::new(onnx, tokenizer)
        .with_pooling(fastembed::Pooling::Mean);
    // One intra-op thread: the embedding thread is the unit of parallelism,
    // and the workers' cores must not be taken by ONNX Runtime's pool.
    let options = fastembed::InitOptionsUserDefined::new()
        .with_max_length(MAX_TOKENS)
        .with_intra_threads(1);
    let embedding = fastembed::TextEmbedding::try_new_from_user_defined(model, options)
        .map_err(|e| CacheError::Model(format!("{}: {e}", model_dir.display())))?;
    Ok(Embedder::Local(Box::new(embedding)))
}

impl UpstreamEmbedder {
    /// POST /v1/embeddings with every text in one request (the server
    /// batches on its GPU); blocking, as this runs on the embedding thread.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, CacheError> {
        let fail = |m: String| CacheError::Embed(format!("{}: {m}", self.upstream.name));
        let body = serde_json::to_vec(&serde_json::json!({"model": self.model, "input": texts}))
            .map_err(|e| fail(e.to_string()))?;
        let (status, answer) = crate::upstream::health::blocking_request(
            &self.upstream,
            "/v1/embeddings",
            Some(&body),
            Duration::from_secs(5),
        )
        .ok_or_else(|| fail("no answer".into()))?;
        if status != 200 {
            return Err(fail(format!("status {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Embeddings {
            data: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            index: usize,
            embedding: Vec<f32>,
        }
        let mut parsed: Embeddings =
            serde_json::from_slice(&answer).map_err(|e| fail(e.to_string()))?;
        parsed.data.sort_by_key(|i| i.index);
        Ok(parsed.data.into_iter().map(|i| i.embedding).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_vectors_give_cosine_by_dot_product() {
        let mut a = vec![3.0, 4.0];
        let mut b = vec![6.0, 8.0];
        normalize(&mut a);
        normalize(&mut b);
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-6);
        let mut c = vec![-4.0, 3.0];
        normalize(&mut c);
        assert!(cosine(&a, &c).abs() < 1e-6);
    }

    #[test]
    fn final_punctuation_is_not_embedded() {
        assert_eq!(question_core("  What is it?! \n"), "What is it");
        assert_eq!(question_core("5.5"), "5.5");
        assert_eq!(question_core("?"), "");
    }
}
