//! Generated inputs for comparing the VM with the interpreter: each is a
//! documented sample input bent a few ways at random — a field removed, set
//! to `null` or to the wrong type, or given a value taken from elsewhere in
//! the sample or in the policy's data (so that lookups sometimes match) —
//! from a seeded PRNG, so a policy gets the same corpus on every load.

use serde_json::{Value, json};

/// splitmix64: small, seeded, and good enough to pick mutations.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0; 0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// Values a mutation can put anywhere: every subtree of the samples and of
/// the data (small ones), plus the awkward ones.
#[derive(Debug, Clone)]
pub(crate) struct Pool(Vec<Value>);

/// Subtrees bigger than this (in serialised bytes) stay out of the pool.
const POOL_VALUE_MAX: usize = 512;

impl Pool {
    pub(crate) fn new<'a>(sources: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut values = vec![
            Value::Null,
            json!(true),
            json!(false),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1e300),
            json!(u64::MAX),
            json!(""),
            json!("x"),
            json!([]),
            json!({}),
            json!([null]),
            json!({"": null}),
            // Words of the input schema, so that kinds and outcomes vary.
            json!("human"),
            json!("workload"),
            json!("user_cert"),
            json!("host_cert"),
        ];
        for source in sources {
            collect(source, &mut values);
        }
        values.sort_by_cached_key(|v| v.to_string());
        values.dedup();
        Pool(values)
    }
}

fn collect(v: &Value, out: &mut Vec<Value>) {
    if v.to_string().len() <= POOL_VALUE_MAX {
        out.push(v.clone());
    }
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
        Value::Object(map) => map.iter().for_each(|(k, i)| {
            out.push(Value::String(k.clone()));
            collect(i, out);
        }),
        _ => {}
    }
}

/// `count` inputs: `sample` itself first, then mutants of it.
pub(crate) fn inputs(sample: &Value, pool: &Pool, rng: &mut Rng, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    if count > 0 {
        out.push(sample.clone());
    }
    while out.len() < count {
        let mut input = sample.clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut input, pool, rng);
        }
        out.push(input);
    }
    out
}

/// One mutation somewhere in `v`: walk down at random and change what is
/// there.
fn mutate(v: &mut Value, pool: &Pool, rng: &mut Rng) {
    // Stop here sometimes, and always at a leaf.
    let descend = rng.below(4) != 0;
    match v {
        Value::Object(map) if descend && !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let Some(key) = rng.pick(&keys).cloned() else {
                return;
            };
            match rng.below(8) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    if let Some(Value::String(k)) = rng.pick(&pool.0) {
                        let value = rng.pick(&pool.0).cloned().unwrap_or(Value::Null);
                        map.insert(k.clone(), value);
                    }
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate(child, pool, rng);
                    }
                }
            }
        }
        Value::Array(items) if descend && !items.is_empty() => match rng.below(6) {
            0 => {
                let at = rng.below(items.len());
                items.remove(at);
            }
            1 => {
                let value = rng.pick(&pool.0).cloned().unwrap_or(Value::Null);
                items.push(value);
            }
            2 => {
                let at = rng.below(items.len());
                let copy = items.get(at).cloned().unwrap_or(Value::Null);
                items.push(copy);
            }
            _ => {
                let at = rng.below(items.len());
                if let Some(child) = items.get_mut(at) {
                    mutate(child, pool, rng);
                }
            }
        },
        _ => {
            if let Some(value) = rng.pick(&pool.0) {
                *v = value.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_corpus_and_mutants_differ() {
        let sample = json!({"a": {"b": [1, 2], "c": "x"}, "d": null});
        let pool = Pool::new([&sample]);
        let one = inputs(&sample, &pool, &mut Rng::new(7), 500);
        let two = inputs(&sample, &pool, &mut Rng::new(7), 500);
        assert_eq!(one, two);
        assert_eq!(one[0], sample);
        let distinct: std::collections::BTreeSet<String> =
            one.iter().map(|v| v.to_string()).collect();
        assert!(distinct.len() > 150, "{distinct:?}");
        // Missing fields, nulls and wrong types all occur.
        assert!(one.iter().any(|v| v.get("a").is_none()));
        assert!(
            one.iter()
                .any(|v| v["a"]["c"].is_null() && v["a"].get("c").is_some())
        );
        assert!(
            one.iter()
                .any(|v| v["a"]["b"].is_string() || v["a"]["b"].is_number())
        );
    }
}
