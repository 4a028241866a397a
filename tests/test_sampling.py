"""jaxlayer.sampling.generate against transformers' generate and teacher-forced forwards.

Compiling is most of this file's cost, so the tests share a few call shapes: the same prompt
batch (same buckets), MAX_NEW tokens, and the Qwen2 model except for the parity tests.
"""

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxlayer import models, sampling

MAX_NEW = 16
PROMPT_LENGTHS = [7, 3, 11, 1]  # left-padded to the bucket of 11 (12) inside generate


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.RandomState(0)
  return [rng.randint(0, 300, n).tolist() for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module")
def qwen2(tiny_qwen2_dir):
  return models.from_pretrained(tiny_qwen2_dir)[0]


def _hf_greedy(hf_model, prompt, eos_token_id=None) -> np.ndarray:
  with torch.no_grad():
    out = hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=MAX_NEW,
                            eos_token_id=eos_token_id, pad_token_id=0)
  return out[0, len(prompt):].numpy()


@nnx.jit
def _forward(model, ids, mask):
  return model(ids, mask)


def _teacher_forced_logits(model, out, prompts) -> np.ndarray:
  """Logits [rows, MAX_NEW, vocab] for each sampled token given its prompt and the tokens before.

  One left-padded forward over prompt + completion per row (jaxlayer's own model(ids, mask)).
  """
  width = max(len(p) for p in prompts)
  ids = np.zeros((len(out.tokens), width + MAX_NEW), np.int32)
  mask = np.zeros(ids.shape, bool)
  for row, prompt_index in enumerate(out.prompt_index):
    prompt = prompts[prompt_index]
    ids[row, width - len(prompt):] = [*prompt, *out.tokens[row]]
    mask[row, width - len(prompt):] = True
  return np.asarray(_forward(model, ids, mask))[:, width - 1:-1]


def _logprobs_of(logits, tokens, temperature=1.0) -> np.ndarray:
  logprobs = jax.nn.log_softmax(logits / temperature, axis=-1)
  return np.take_along_axis(np.asarray(logprobs), tokens[..., None], -1)[..., 0]


@pytest.mark.parametrize("model_dir", ["tiny_qwen2_dir", "tiny_qwen3_dir"])
def test_greedy_equals_transformers_and_eos_stops(model_dir, prompts, request):
  model_dir = request.getfixturevalue(model_dir)
  model, _ = models.from_pretrained(model_dir)
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
  references = [_hf_greedy(hf_model, p) for p in prompts]
  out = sampling.generate(model, prompts, max_new_tokens=MAX_NEW, temperature=0,
                          eos_token_ids=[], seed=0)
  np.testing.assert_array_equal(out.tokens, np.stack(references))
  assert out.mask.all() and out.finish_reasons == ["length"] * len(prompts)
  assert out.tokens.dtype == np.int32 and out.logprobs.dtype == np.float32
  expected = _logprobs_of(_teacher_forced_logits(model, out, prompts), out.tokens)
  np.testing.assert_allclose(out.logprobs, expected, atol=1e-4)  # greedy: untempered softmax

  # An EOS token that row 0 produces at step 5 (and maybe other rows elsewhere) stops there.
  eos = int(references[0][5])
  hf_with_eos = [_hf_greedy(hf_model, p, eos_token_id=eos) for p in prompts]
  out = sampling.generate(model, prompts, max_new_tokens=MAX_NEW, temperature=0,
                          eos_token_ids=[eos], seed=0, pad_token_id=0)
  for row, reference in enumerate(hf_with_eos):
    stops = np.flatnonzero(references[row] == eos)
    length = stops[0] + 1 if len(stops) else MAX_NEW
    assert out.lengths[row] == length == len(reference)
    np.testing.assert_array_equal(out.tokens[row, :length], reference[:length])
    assert (out.tokens[row, length:] == 0).all() and (out.logprobs[row, length:] == 0).all()
    assert out.mask[row].tolist() == [True] * length + [False] * (MAX_NEW - length)
    assert out.finish_reasons[row] == ("eos" if len(stops) else "length")
  assert out.lengths[0] <= 6 and out.finish_reasons[0] == "eos"


def _sample(model, prompts, **kwargs):
  args = dict(max_new_tokens=MAX_NEW, num_samples=2, temperature=1.0, eos_token_ids=[], seed=0)
  return sampling.generate(model, prompts, **(args | kwargs))


def test_logprobs_equal_teacher_forced_forward(qwen2, prompts, tiny_qwen2_dir):
  out = _sample(qwen2, prompts, temperature=0.7, eos_token_ids=[7, 11, 13])
  assert out.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  expected = _logprobs_of(_teacher_forced_logits(qwen2, out, prompts), out.tokens, 0.7)
  np.testing.assert_allclose(out.logprobs, np.where(out.mask, expected, 0.0), atol=1e-4)
  assert not out.mask.all()  # some rows stopped at an EOS token

  hf_model = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()
  for row, prompt_index in enumerate(out.prompt_index):  # and under transformers' forward
    prompt, n = prompts[prompt_index], out.lengths[row]
    completion = torch.tensor(out.tokens[row, :n])
    with torch.no_grad():
      logits = hf_model(torch.cat([torch.tensor(prompt), completion])[None]).logits[0]
    hf_logprobs = torch.log_softmax(logits[len(prompt) - 1:-1] / 0.7, -1)
    hf_logprobs = hf_logprobs[torch.arange(n), completion]
    np.testing.assert_allclose(out.logprobs[row, :n], hf_logprobs.numpy(), atol=1e-4)


def test_same_seed_same_samples(qwen2, prompts):
  first, again, other = (_sample(qwen2, prompts, seed=s) for s in (3, 3, 4))
  np.testing.assert_array_equal(first.tokens, again.tokens)
  np.testing.assert_array_equal(first.logprobs, again.logprobs)
  assert (first.tokens != other.tokens).mean() > 0.5  # ~300 near-equally likely tokens
  assert (first.tokens[0::2] != first.tokens[1::2]).mean() > 0.5  # the 2 samples differ


def test_each_row_and_step_draws_its_own_number_from_the_seed(qwen2, prompts):
  """Row r's token at step t is the inverse CDF (vocabulary order) of the teacher-forced
  distribution at the uniform number drawn from (seed, t, r): each step draws a new number."""
  out = _sample(qwen2, prompts, seed=3)
  logits = _teacher_forced_logits(qwen2, out, prompts).astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)  # [rows, MAX_NEW, vocab]
  cdf_after = np.take_along_axis(np.cumsum(probs, -1), out.tokens[..., None], -1)[..., 0]
  cdf_before = cdf_after - np.take_along_axis(probs, out.tokens[..., None], -1)[..., 0]
  key = jax.random.key(3)
  uniform = np.array([[jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, step), row))
                       for step in range(MAX_NEW)] for row in range(len(out.tokens))])
  # [rows, MAX_NEW]; 1e-5: the sampler's float32 logits against these float64 sums
  assert ((cdf_before - 1e-5 <= uniform) & (uniform <= cdf_after + 1e-5)).all()


@pytest.mark.parametrize("cut", [dict(top_k=3), dict(top_p=0.1)])
def test_top_k_and_top_p_never_leave_the_allowed_set(qwen2, prompts, cut):
  out = _sample(qwen2, prompts, **cut)
  logits = _teacher_forced_logits(qwen2, out, prompts).astype(np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)  # [rows, MAX_NEW, vocab]
  chosen = np.take_along_axis(probs, out.tokens[..., None], -1)  # [rows, MAX_NEW, 1]
  above = np.where(probs > chosen, probs, 0.0)  # the tokens ranked above each sample
  ordered = np.sort(probs, -1)[..., ::-1]
  if "top_k" in cut:
    assert ((probs > chosen).sum(-1) < cut["top_k"]).all()
    kept = ordered[..., :cut["top_k"]].sum(-1)
  else:
    assert (above.sum(-1) < cut["top_p"] + 1e-6).all()
    kept = np.where(np.cumsum(ordered, -1) - ordered < cut["top_p"], ordered, 0).sum(-1)
  # The log-prob is that of the renormalised, cut distribution.
  np.testing.assert_allclose(out.logprobs, np.log(chosen[..., 0] / kept), atol=1e-4)
  assert (above.sum(-1) > 0).mean() > 0.3  # it samples, not only the argmax


@pytest.mark.parametrize("top_p", [0.25, 0.5, 0.75])
def test_top_p_through_tied_tokens_keeps_what_transformers_keeps(top_p):
  """Eight equally likely tokens: the best top_p * 8 of them hold exactly top_p of the mass,
  and transformers' TopPLogitsWarper keeps only those (a token is cut once the tokens before
  it hold top_p); each sample's log-prob is then that of 1 in as many."""
  logits = np.full((256, 300), -np.inf, np.float32)  # [rows, vocab]
  logits[:, 10:18] = 2.0
  warped = transformers.TopPLogitsWarper(top_p)(None, torch.tensor(logits[:1]))
  kept = set(np.flatnonzero(torch.isfinite(warped[0]).numpy()).tolist())
  assert len(kept) == top_p * 8
  row_keys = jax.random.split(jax.random.PRNGKey(0), len(logits))
  tokens, logprobs = sampling._choose(jax.numpy.asarray(logits), row_keys, temperature=1.0,
                                      top_p=np.float32(top_p), greedy=False, top_k=0,
                                      use_top_p=True)
  np.testing.assert_allclose(logprobs, np.log(1 / len(kept)), rtol=1e-6)
  assert len(set(np.asarray(tokens).tolist())) == len(kept)  # 256 draws reach each of them
  assert set(np.asarray(tokens).tolist()) <= set(range(10, 18))


def test_a_draw_at_the_top_of_the_unit_interval_stays_within_the_weights():
  """The largest uniform number below 1 against weights over seven orders of magnitude in 2
  blocks: float32 round-off between the block sums and the sums within a block must not carry
  the draw past the last entry."""
  rng = np.random.default_rng(0)
  weights = rng.random((512, 2, 128)) * 10.0 ** rng.integers(-3, 4, (512, 2, 128))
  uniform = np.full(512, np.nextafter(np.float32(1), np.float32(0)))  # [rows]
  index, _ = sampling._inverse_cdf(jax.numpy.asarray(weights, np.float32), uniform)
  assert (np.asarray(index) < 256).all()


def test_low_temperature_tends_to_greedy(qwen2, prompts):
  greedy = sampling.generate(qwen2, prompts, max_new_tokens=MAX_NEW, temperature=0,
                             eos_token_ids=[], seed=0)
  repeated_greedy = np.repeat(greedy.tokens, 2, axis=0)
  mismatch = {t: (_sample(qwen2, prompts, temperature=t).tokens != repeated_greedy).mean()
              for t in (1.0, 0.01, 1e-4, 1e-30)}
  assert mismatch[1.0] > 0.5 and mismatch[1.0] > mismatch[0.01] > mismatch[1e-4] == 0
  assert mismatch[1e-30] == 0  # no overflow to inf / nan at tiny temperatures


def test_sampled_eos_stops_masks_and_all_finished_stops_the_loop(qwen2, prompts):
  eos = list(range(0, 300, 10))  # ~10% of the vocabulary
  out = _sample(qwen2, prompts, eos_token_ids=eos, pad_token_id=299)
  is_eos = np.isin(out.tokens, eos)
  for row in range(len(out.tokens)):
    n = out.lengths[row]
    stops = np.flatnonzero(is_eos[row])
    assert out.finish_reasons[row] == ("eos" if len(stops) else "length")
    assert n == (stops[0] + 1 if len(stops) else MAX_NEW)
    assert (out.tokens[row, n:] == 299).all() and (out.logprobs[row, n:] == 0).all()
    assert (out.logprobs[row, :n] < 0).all() and out.mask[row].sum() == n
  assert "eos" in out.finish_reasons and "length" in out.finish_reasons

  # When every sequence has stopped the decode loop stops too.
  greedy = sampling.generate(qwen2, prompts, max_new_tokens=MAX_NEW, temperature=0,
                             eos_token_ids=[], seed=0)
  assert greedy.steps == MAX_NEW
  first_tokens = sorted(set(greedy.tokens[:, 0].tolist()))
  stopped = sampling.generate(qwen2, prompts, max_new_tokens=MAX_NEW, temperature=0,
                              eos_token_ids=first_tokens, seed=0)
  assert stopped.steps == 1 and stopped.lengths.tolist() == [1] * len(prompts)
  # Over several calls: the longest call's steps (here prompt 3's call stops at once).
  in_calls = sampling.generate(qwen2, prompts, max_new_tokens=MAX_NEW, temperature=0,
                               eos_token_ids=[int(greedy.tokens[3, 0])], seed=0,
                               prompts_per_call=3)
  assert in_calls.lengths[3] == 1 and in_calls.steps == in_calls.lengths.max() > 1


def test_filler_rows_do_not_keep_the_loop_going(qwen2, prompts):
  """9 prompts fill a batch of 10 (`bucket`): the loop stops when the 9 have stopped, whatever
  the filler row would decode."""
  nine = [*prompts, *(p[:2] for p in prompts), prompts[2][3:]]
  args = dict(max_new_tokens=MAX_NEW, temperature=0, seed=0)
  greedy = sampling.generate(qwen2, nine, eos_token_ids=[], **args)
  first_tokens = sorted(set(greedy.tokens[:, 0].tolist()))
  stopped = sampling.generate(qwen2, nine, eos_token_ids=first_tokens, **args)
  assert stopped.steps == 1 and stopped.lengths.tolist() == [1] * len(nine)


def _spy_on_prefill(monkeypatch):
  """Records each prefill's prompt-id shape and the cache it returned."""
  calls = []
  real = sampling._prefill

  def recording(model, ids, *args, **kwargs):
    logits, cache = real(model, ids, *args, **kwargs)
    calls.append((ids.shape, cache))
    return logits, cache

  monkeypatch.setattr(sampling, "_prefill", recording)
  return calls


def test_group_sampling_prefills_each_prompt_once(qwen2, prompts, monkeypatch):
  calls = _spy_on_prefill(monkeypatch)
  grouped = _sample(qwen2, prompts, num_samples=2)
  assert calls[0][0][0] == 4  # 4 prompt rows prefilled for 8 samples
  # The same as sampling each prompt copy on its own row (row r has the same random stream).
  separate = _sample(qwen2, [p for p in prompts for _ in range(2)], num_samples=1)
  assert calls[1][0][0] == 8
  np.testing.assert_array_equal(grouped.tokens, separate.tokens)
  np.testing.assert_allclose(grouped.logprobs, separate.logprobs, atol=1e-5)
  assert grouped.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_cache_buffers_are_donated_to_the_decode_loop(qwen2, prompts, monkeypatch):
  calls = _spy_on_prefill(monkeypatch)
  _sample(qwen2, prompts)
  cache = calls[0][1]
  buffers = [*cache.keys, *cache.values]
  assert buffers and all(b.is_deleted() for b in buffers)


def test_bucket_sizes():
  assert [sampling.bucket(n) for n in (1, 7, 8, 9, 11, 16, 17, 33, 100, 256, 257)] == [
      1, 7, 8, 10, 12, 16, 20, 40, 112, 256, 320]
  assert sampling.bucket(3, multiple=4) == 4 and sampling.bucket(9, multiple=4) == 12
  assert all(n <= sampling.bucket(n) <= 1.25 * n for n in range(1, 2000))


@pytest.mark.eight_devices
def test_sharded_model_and_batch_equal_single_device(tiny_qwen2_dir, qwen2, prompts, monkeypatch):
  mesh = models.make_mesh(data=2, fsdp=2, tensor=2)
  sharded, _ = models.from_pretrained(tiny_qwen2_dir, mesh=mesh)
  expected = _sample(qwen2, prompts)
  calls = _spy_on_prefill(monkeypatch)
  got = _sample(sharded, prompts[:3])  # 3 prompts: padded to 4, the batch shards of this mesh
  np.testing.assert_array_equal(got.tokens, expected.tokens[:6])  # row r: the same random stream
  np.testing.assert_allclose(got.logprobs, expected.logprobs[:6], atol=1e-5)
  (ids_shape, cache), = calls
  assert ids_shape[0] == 4
  for buffer in (cache.prefix_keys[0], cache.values[0]):  # the cache is split over the batch
    assert buffer.sharding.spec[0] == ("data", "fsdp")
    assert buffer.sharding.shard_shape(buffer.shape)[0] == buffer.shape[0] // 4


# fsdp=3 splits no dimension of the tiny model (none divides by 3): each device holds all of it,
# and the rows are numbered over both batch axes.
@pytest.mark.eight_devices
@pytest.mark.parametrize("data,fsdp", [(8, 1), (2, 3)])
def test_data_parallel_mesh_decodes_each_device_rows_alone(tiny_qwen2_dir, qwen2, prompts,
                                                           decode_loops, data, fsdp):
  """A full parameter copy per device: every device runs its own decode loop on its rows."""
  mesh = models.make_mesh(data=data, fsdp=fsdp, devices=jax.devices()[:data * fsdp])
  replicated, _ = models.from_pretrained(tiny_qwen2_dir, mesh=mesh)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(replicated))
  assert sampling.replicated(replicated) is replicated  # already whole on every device: no copy
  eos = dict(eos_token_ids=[7, 11, 13])
  expected = _sample(qwen2, prompts, **eos)
  decode_loops.clear()
  got = _sample(replicated, prompts, **eos)
  assert decode_loops == [2]  # 4 prompts padded to one per device, x 2 samples: 2 rows per loop
  assert 0 < (got.lengths < MAX_NEW).sum() < len(got.lengths)  # rows stop at different steps
  np.testing.assert_array_equal(got.tokens, expected.tokens)
  np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-5)
  np.testing.assert_array_equal(got.lengths, expected.lengths)
  assert got.finish_reasons == expected.finish_reasons
  assert got.steps == expected.steps == got.lengths.max()


def test_prompts_per_call_gives_the_samples_of_one_call(qwen2, prompts, monkeypatch):
  expected = _sample(qwen2, prompts, eos_token_ids=[7, 11, 13])
  calls = _spy_on_prefill(monkeypatch)
  got = _sample(qwen2, prompts, eos_token_ids=[7, 11, 13], prompts_per_call=3)
  assert [ids_shape[0] for ids_shape, _ in calls] == [3, 3]  # 3 prompts, then 1 filled up to 3
  assert got.tokens.shape == expected.tokens.shape == (8, MAX_NEW)
  np.testing.assert_array_equal(got.tokens, expected.tokens)  # rows keep their random streams
  np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-5)
  np.testing.assert_array_equal(got.lengths, expected.lengths)
  assert got.finish_reasons == expected.finish_reasons
  assert 0 < (got.lengths < MAX_NEW).sum() < len(got.lengths)  # some rows stopped at an EOS
  np.testing.assert_array_equal(got.prompt_index, expected.prompt_index)
  with pytest.raises(ValueError, match=r"prompts_per_call must be an integer >= 0"):
    _sample(qwen2, prompts, prompts_per_call=-1)



def test_row_ids_number_a_calls_rows_within_the_whole_batch(qwen2, prompts):
  """Prompts 0 and 2 sampled alone, their rows numbered as in the whole batch (0, 1, 4, 5),
  draw those rows of the whole batch's samples."""
  expected = _sample(qwen2, prompts, eos_token_ids=[7, 11, 13])
  rows = [0, 1, 4, 5]
  got = _sample(qwen2, [prompts[0], prompts[2]], eos_token_ids=[7, 11, 13], row_ids=rows)
  np.testing.assert_array_equal(got.tokens, expected.tokens[rows])
  np.testing.assert_allclose(got.logprobs, expected.logprobs[rows], atol=1e-5)
  assert got.finish_reasons == [expected.finish_reasons[r] for r in rows]
  unnumbered = _sample(qwen2, [prompts[0], prompts[2]], eos_token_ids=[7, 11, 13])
  assert (unnumbered.tokens[2:] != got.tokens[2:]).mean() > 0.5  # rows 2, 3 draw other numbers


@pytest.mark.eight_devices
def test_row_ids_reach_each_devices_decode_loop(tiny_qwen2_dir, qwen2, prompts, decode_loops):
  mesh = models.make_mesh(data=8, fsdp=1)
  replicated, _ = models.from_pretrained(tiny_qwen2_dir, mesh=mesh)
  expected = _sample(qwen2, prompts)
  rows = [6, 7, 2, 3]  # prompts 3 and 1: rows on other devices than in the whole batch
  decode_loops.clear()
  got = _sample(replicated, [prompts[3], prompts[1]], row_ids=rows)
  assert decode_loops == [2]  # each device decodes its own rows
  np.testing.assert_array_equal(got.tokens, expected.tokens[rows])
  np.testing.assert_allclose(got.logprobs, expected.logprobs[rows], atol=1e-5)


@pytest.mark.parametrize("row_ids, error", [
    ([0, 1, 2], r"one integer per returned row \(prompts x num_samples = 4\), got shape \(3,\)"),
    ([0.0, 1.0, 2.0, 3.0], "got shape \\(4,\\) and dtype float64"),
    ([[0, 1], [2, 3]], r"got shape \(2, 2\)"),
    ([0, 1, 2, -1], r"row_ids must be in \[0, 2\*\*31\), got -1"),
    ([0, 1, 2, 2**31], r"row_ids must be in \[0, 2\*\*31\), got 2147483648"),
])
def test_bad_row_ids_are_refused(qwen2, prompts, row_ids, error):
  with pytest.raises(ValueError, match=error):
    _sample(qwen2, prompts[:2], row_ids=row_ids)


@pytest.mark.parametrize("prompt_list,kwargs,error", [
    ([], {}, "prompts is empty"),
    ([[1, 2], []], {}, r"prompts\[1\] is empty"),
    ([1, 2, 3], {}, r"single token id.*\[ids\]"),
    (np.array([1, 2, 3]), {}, r"single token id.*\[ids\]"),
    (np.ones((2, 3)), {}, r"prompts\[0\] must be a flat list of integer token ids.*float64"),
    ("the fox", {}, "tokenize"),
    ([[1, 300]], {}, "token id 300 outside"),
    ([[1] * 250], dict(max_new_tokens=7), "257 positions.*max_position_embeddings=256"),
    ([[1] * 256], {}, r"prompts\[0\] has 256 tokens.*max_position_embeddings=256: shorten it\.$"),
    ([[1]], dict(num_samples=0), "num_samples must be an integer >= 1"),
    ([[1]], dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
    ([[1]], dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    ([[1]], dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    ([[1]], dict(top_k=-1), "top_k must be an integer >= 0"),
    ([[1]], dict(temperature=-0.5), "temperature must be a finite number >= 0"),
    ([[1]], dict(eos_token_ids=5), r"pass \[5\]"),
    ([[1]], dict(eos_token_ids=[400]), "eos_token_ids contains 400"),
    # what a notebook passes by mistake: each used to fail inside JAX or Python, or (a string
    # of digits) to stop at every digit's token id
    ([[1]], dict(eos_token_ids="151643"), "list of integer token ids, got '151643'"),
    ([[1]], dict(eos_token_ids=[None]), r"list of integer token ids, got \[None\]"),
    ([[1]], dict(pad_token_id=None), "pad_token_id must be an integer.*eos_token_id"),
    ([[1]], dict(seed=None), "seed must be an integer.*got None"),
    ([[1]], dict(seed=jax.random.key(0)), "seed must be an integer.*got an array of dtype key"),
    ([[1]], dict(num_samples=True), "num_samples must be an integer >= 1, got True"),
])
def test_bad_input_is_a_clear_error(qwen2, prompt_list, kwargs, error):
  args = dict(max_new_tokens=4, eos_token_ids=[], seed=0) | kwargs
  with pytest.raises((ValueError, TypeError), match=error):
    sampling.generate(qwen2, prompt_list, **args)


def test_a_prompt_too_long_is_named_with_the_max_new_tokens_that_fits(qwen2):
  prompt_list = [[1] * 10, [1] * 251, [1] * 252, [1] * 252]  # 256 positions
  with pytest.raises(ValueError) as error:
    sampling.generate(qwen2, prompt_list, max_new_tokens=7, eos_token_ids=[], seed=0)
  assert str(error.value) == (
      "prompts[2], the longest of 3 too long, has 252 tokens; with max_new_tokens=7 that is 259 "
      "positions, beyond the model's max_position_embeddings=256: shorten them or set "
      "max_new_tokens to at most 4.")
  with pytest.raises(ValueError, match=r"^prompts\[1\] has 251 tokens;.*at most 5\.$"):
    sampling.generate(qwen2, prompt_list[:2], max_new_tokens=7, eos_token_ids=[], seed=0)
  # What the message offers fits: 252 + 4 = 256 positions.
  sampling._check_args(qwen2.config, prompt_list[2:3], 4, 1, 1.0, 0, 1.0, [], 0, 0)


def test_the_pair_from_pretrained_returns_is_refused_with_the_fix(tiny_qwen2_dir, tmp_path):
  loaded = models.from_pretrained(tiny_qwen2_dir)  # (model, config), not unpacked
  with pytest.raises(TypeError, match=r"unpack it: `model, config = models.from_pretrained"):
    sampling.generate(loaded, [[1]], max_new_tokens=4, eos_token_ids=[], seed=0)
  with pytest.raises(TypeError, match=r"unpack it"):
    models.save_pretrained(loaded, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_eos_ids_may_come_from_any_iterable(qwen2, prompts):
  args = dict(max_new_tokens=MAX_NEW, seed=0, temperature=0.0)
  expected = sampling.generate(qwen2, prompts, eos_token_ids=[7, 11], **args)
  for eos in (iter([7, 11]), np.array([7, 11]), (t for t in (7, 11))):
    got = sampling.generate(qwen2, prompts, eos_token_ids=eos, **args)
    np.testing.assert_array_equal(got.lengths, expected.lengths)


def test_rows_of_an_array_are_prompts(qwen2, prompts):
  """A 2-D array used to be refused as if it were untokenized text."""
  rows = [prompt[:3] for prompt in prompts[:3]]
  args = dict(max_new_tokens=4, eos_token_ids=[], seed=0, temperature=0.0)
  expected = sampling.generate(qwen2, rows, **args).tokens
  for array in (np.array(rows), jax.numpy.asarray(rows)):
    np.testing.assert_array_equal(sampling.generate(qwen2, array, **args).tokens, expected)


def test_same_bucket_batch_does_not_recompile(qwen2):
  """Last in this file: it empties the compilation caches, so the count starts at zero."""
  def compiled():
    return sampling._prefill._cache_size() + sampling._decode._cache_size()

  sampling._prefill.clear_cache()
  sampling._decode.clear_cache()
  rng = np.random.RandomState(1)
  batch = lambda lengths: [rng.randint(0, 300, n).tolist() for n in lengths]  # noqa: E731
  sampling.generate(qwen2, batch([9, 4, 6]), max_new_tokens=5, eos_token_ids=[], seed=0)
  assert compiled() == 2
  assert sampling.bucket(9) == sampling.bucket(10) == 10
  sampling.generate(qwen2, batch([10, 2, 7]), max_new_tokens=5, eos_token_ids=[1], seed=5,
                    temperature=0.5)
  assert compiled() == 2  # other prompts, lengths, seed, EOS and temperature: no new compile
  sampling.generate(qwen2, batch([11, 2, 7]), max_new_tokens=5, eos_token_ids=[], seed=0)
  assert compiled() == 4  # prompt length bucket 12: compiled anew
