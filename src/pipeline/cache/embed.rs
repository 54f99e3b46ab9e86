//! Sentence embeddings for the semantic cache: a local ONNX
//! sentence-transformer through fastembed with ONNX Runtime loaded from a
//! shared library (`kind = "local"`), or a model server's `/v1/embeddings`
//! (`kind = "upstream"`). Used only on the embedding thread and by
//! `sluice cache eval`, never on a worker.

use super::CacheError;
use crate::config::snapshot::EmbedderSettings;
use std::io::{Read, Write};
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
    /// `host:port` of the model server.
    address: String,
    /// Path prefix of the upstream (e.g. `/v1` is added after it).
    path: String,
    host_header: String,
    authorization: Option<String>,
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
            EmbedderSettings::Upstream {
                address,
                path_prefix,
                host_header,
                authorization,
                model,
            } => Ok(Embedder::Upstream(UpstreamEmbedder {
                address: address.clone(),
                path: format!("{path_prefix}/v1/embeddings"),
                host_header: host_header.clone(),
                authorization: authorization.clone(),
                model: model.clone(),
            })),
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
    /// batches on its GPU); a blocking client, as this runs on the
    /// embedding thread.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, CacheError> {
        let fail = |m: String| CacheError::Embed(format!("{}: {m}", self.address));
        let body = serde_json::to_vec(&serde_json::json!({"model": self.model, "input": texts}))
            .map_err(|e| fail(e.to_string()))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&self.address)
            .map_err(|e| fail(e.to_string()))?
            .next()
            .ok_or_else(|| fail("no address".into()))?;
        let timeout = Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| fail(e.to_string()))?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        let auth = self
            .authorization
            .as_deref()
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{auth}connection: close\r\n\r\n",
            self.path,
            self.host_header,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body))
            .map_err(|e| fail(e.to_string()))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| fail(e.to_string()))?;
        let split = memchr::memmem::find(&answer, b"\r\n\r\n")
            .ok_or_else(|| fail("no HTTP head".into()))?;
        let status_ok = answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200");
        if !status_ok {
            let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(fail(String::from_utf8_lossy(line).into_owned()));
        }
        let head = &answer[..split];
        let mut body = answer[split + 4..].to_vec();
        if memchr::memmem::find(&head.to_ascii_lowercase(), b"transfer-encoding: chunked").is_some()
        {
            body = dechunk(&body).ok_or_else(|| fail("bad chunked body".into()))?;
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
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        parsed.data.sort_by_key(|i| i.index);
        Ok(parsed.data.into_iter().map(|i| i.embedding).collect())
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = memchr::memmem::find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
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

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"9\r\nabc"), None);
    }
}
