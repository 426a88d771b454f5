# Copyright 2026 The pi0_trt_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Tests of the pi0 instruction tokenizer against tiny PaliGemma-style tokenizers built offline."""

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import sentencepiece
import tokenizers

from pi0_trt_ros.errors import TokenizerError
from pi0_trt_ros.testing.tiny_tokenizer import (
    build_tiny_sentencepiece, build_tiny_tokenizer_json, CORPUS, NEWLINE_TOKEN, SPECIAL_TOKENS)
from pi0_trt_ros.tokenizer import Pi0Tokenizer, resolve_tokenizer_file

L = 48  # pi0's tokenizer_max_length
KINDS = ('tokenizer.json', 'tokenizer.model')
UNSEEN = (
    'pick up the red cube',
    'Pick up the red cube\n',
    'wave hello to the camera, then bow',
    '  leading and trailing spaces  ',
    'tabs\tand\nnewlines inside',
    'numbers 12345 and 3.14159',
    'café, naïve, 東京, emoji 🤖',
    'say <eos> then <bos>, <pad>,<unk> and <eos',  # literal special tokens: split out, as Hugging Face does
)


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a folder holding a tiny tokenizer.json and tokenizer.model built from the same model."""
    folder = tmp_path_factory.mktemp('tiny_tokenizer')
    build_tiny_tokenizer_json(folder / 'tokenizer.json')
    build_tiny_sentencepiece(folder / 'tokenizer.model')
    return folder


@pytest.fixture(scope='module')
def toks(tiny_dir: Path) -> dict[str, Pi0Tokenizer]:
    """Return one Pi0Tokenizer per file kind, max_length 48."""
    return {kind: Pi0Tokenizer.from_path(tiny_dir / kind, L) for kind in KINDS}


@pytest.fixture(scope='module')
def newline_id(tiny_dir: Path) -> int:
    """Return the id of the newline token, read from the SentencePiece model itself."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_dir / 'tokenizer.model'))
    return sp.piece_to_id(NEWLINE_TOKEN)


def hf_style_reference(tokenizer_json: Path, text: str, length: int) -> tuple[list[int], list[int]]:
    """Encode as transformers' fast tokenizer does for padding='max_length', truncation=True, right side.

    transformers sets exactly these options on the underlying `tokenizers` object before encoding;
    LeRobot's Pi0NewLineProcessor has already appended the newline.
    """
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(max_length=length)
    tok.enable_padding(direction='right', pad_id=0, pad_token='<pad>', length=length)
    enc = tok.encode(text if text.endswith('\n') else text + '\n')
    return enc.ids, enc.attention_mask


@pytest.mark.parametrize('kind', KINDS)
def test_encode_gives_bos_text_newline_then_right_padding(toks: dict[str, Pi0Tokenizer], kind: str,
                                                          newline_id: int) -> None:
    tok = toks[kind]
    ids, mask = tok.encode('pick up the red cube and place it in the bowl')
    assert ids.dtype == np.int64 and ids.shape == (L,)
    assert mask.dtype == np.bool_ and mask.shape == (L,)
    n = int(mask.sum())
    assert 3 <= n < L
    assert mask[:n].all() and not mask[n:].any()
    assert ids[0] == tok.bos_id == 2
    assert ids[n - 1] == newline_id
    assert (ids[1:n - 1] != newline_id).all()
    assert (ids[n:] == tok.pad_id).all() and tok.pad_id == 0
    assert tok.vocab_size == 512 and ids.max() < tok.vocab_size


@pytest.mark.parametrize('text', CORPUS[:8] + UNSEEN)
def test_tokenizer_json_matches_the_hf_fast_tokenizer_call(tiny_dir: Path, toks: dict[str, Pi0Tokenizer],
                                                           text: str) -> None:
    ref_ids, ref_mask = hf_style_reference(tiny_dir / 'tokenizer.json', text, L)
    ids, mask = toks['tokenizer.json'].encode(text)
    assert ids.tolist() == ref_ids
    assert mask.tolist() == [bool(m) for m in ref_mask]


@pytest.mark.parametrize('kind', KINDS)
def test_newline_is_appended_exactly_once(toks: dict[str, Pi0Tokenizer], kind: str, newline_id: int) -> None:
    tok = toks[kind]
    ids, mask = tok.encode('open the top drawer')
    ids_nl, mask_nl = tok.encode('open the top drawer\n')
    np.testing.assert_array_equal(ids, ids_nl)
    np.testing.assert_array_equal(mask, mask_nl)
    assert (ids[mask] == newline_id).sum() == 1
    # Like LeRobot, only a missing final newline is added: one already there is kept, never merged.
    ids_2nl, mask_2nl = tok.encode('open the top drawer\n\n')
    assert (ids_2nl[mask_2nl] == newline_id).sum() == 2


@pytest.mark.parametrize('kind', KINDS)
def test_long_instruction_is_truncated_to_the_first_L_tokens_and_reported(toks: dict[str, Pi0Tokenizer],
                                                                          kind: str, newline_id: int) -> None:
    tok = toks[kind]
    text = ' then '.join(CORPUS[:6])
    full = tok.token_ids(text)
    assert len(full) > L
    ids = np.full(L, -1, dtype=np.int64)
    mask = np.zeros(L, dtype=np.bool_)
    info = tok.encode_into(text, ids, mask)
    assert info.truncated and info.num_tokens == L and info.full_length == len(full)
    assert ids.tolist() == full[:L] and ids[0] == tok.bos_id
    assert mask.all()
    assert ids[-1] != newline_id  # the newline was cut off, as in LeRobot

    short = tok.encode_into('open the top drawer', ids, mask)
    assert not short.truncated and short.num_tokens == short.full_length == int(mask.sum())


@pytest.mark.parametrize('kind', KINDS)
def test_instruction_of_exactly_max_length_tokens_is_not_truncated(tiny_dir: Path, kind: str) -> None:
    text = 'stack the blue block on top of the red block'
    length = len(Pi0Tokenizer.from_path(tiny_dir / kind, L).token_ids(text))
    exact = Pi0Tokenizer.from_path(tiny_dir / kind, length)
    ids, mask = exact.encode(text)
    assert mask.all()
    info = exact.encode_into(text, ids, mask)
    assert not info.truncated and info.num_tokens == length
    one_short = Pi0Tokenizer.from_path(tiny_dir / kind, length - 1)
    info = one_short.encode_into(text, ids[:length - 1].copy(), mask[:length - 1].copy())
    assert info.truncated and info.num_tokens == length - 1


@pytest.mark.parametrize('text', CORPUS + UNSEEN)
def test_tokenizer_json_and_model_give_identical_arrays(toks: dict[str, Pi0Tokenizer], text: str) -> None:
    ids_json, mask_json = toks['tokenizer.json'].encode(text)
    ids_model, mask_model = toks['tokenizer.model'].encode(text)
    np.testing.assert_array_equal(ids_json, ids_model)
    np.testing.assert_array_equal(mask_json, mask_model)


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.one_of(st.text(max_size=30), st.sampled_from(SPECIAL_TOKENS + (NEWLINE_TOKEN, ' '))),
                     min_size=1, max_size=6).map(''.join).filter(lambda s: s.strip()))
def test_any_text_satisfies_the_contract_identically_in_both_kinds(toks: dict[str, Pi0Tokenizer], text: str) -> None:
    ids_json, mask_json = toks['tokenizer.json'].encode(text)
    ids_model, mask_model = toks['tokenizer.model'].encode(text)
    np.testing.assert_array_equal(ids_json, ids_model)
    np.testing.assert_array_equal(mask_json, mask_model)
    n = int(mask_json.sum())
    assert ids_json[0] == 2 and mask_json[:n].all() and not mask_json[n:].any() and (ids_json[n:] == 0).all()


@pytest.mark.parametrize('kind', KINDS)
def test_encoding_is_deterministic_across_loads_and_builds(tmp_path: Path, tiny_dir: Path, kind: str) -> None:
    build = build_tiny_tokenizer_json if kind == 'tokenizer.json' else build_tiny_sentencepiece
    rebuilt = build(tmp_path / kind)
    assert rebuilt.read_bytes() == (tiny_dir / kind).read_bytes()
    first, second = Pi0Tokenizer.from_path(tiny_dir / kind, L), Pi0Tokenizer.from_path(rebuilt, L)
    for text in UNSEEN:
        for a, b in zip(first.encode(text), second.encode(text)):
            np.testing.assert_array_equal(a, b)


def test_encode_into_writes_staged_buffers_and_keeps_them_on_a_bad_instruction(
        toks: dict[str, Pi0Tokenizer]) -> None:
    tok = toks['tokenizer.model']
    staged_ids = np.full((1, L), 7, dtype=np.int64)  # [B=1, L], as the runner stages them
    staged_mask = np.zeros((1, L), dtype=np.bool_)
    info = tok.encode_into('put the apple in the basket', staged_ids[0], staged_mask[0])
    ids, mask = tok.encode('put the apple in the basket')
    np.testing.assert_array_equal(staged_ids[0], ids)
    np.testing.assert_array_equal(staged_mask[0], mask)
    assert info.num_tokens == int(mask.sum())
    before = staged_ids.copy(), staged_mask.copy()
    with pytest.raises(TokenizerError, match='empty or whitespace only'):
        tok.encode_into(' \n', staged_ids[0], staged_mask[0])
    np.testing.assert_array_equal(staged_ids, before[0])
    np.testing.assert_array_equal(staged_mask, before[1])


def test_directory_prefers_tokenizer_json_like_autotokenizer(tmp_path: Path, tiny_dir: Path) -> None:
    assert Pi0Tokenizer.from_path(tiny_dir, L).kind == 'tokenizer.json'
    only_model = tmp_path / 'only_model'
    build_tiny_sentencepiece(only_model / 'tokenizer.model')
    tok = Pi0Tokenizer.from_path(only_model, L)
    assert tok.kind == 'tokenizer.model' and tok.source == only_model / 'tokenizer.model'


def make_hf_cache(hub: Path, tiny_dir: Path) -> Path:
    """Lay out a Hugging Face hub cache entry for PaliGemma: blobs, two snapshots, refs/main -> the newer."""
    entry = hub / 'models--google--paligemma-3b-pt-224'
    (entry / 'blobs').mkdir(parents=True)
    blob = entry / 'blobs' / '0123456789abcdef'
    blob.write_bytes((tiny_dir / 'tokenizer.json').read_bytes())
    old = entry / 'snapshots' / ('a' * 40)  # an older revision without tokenizer files
    new = entry / 'snapshots' / ('b' * 40)
    old.mkdir(parents=True)
    (old / 'config.json').write_text('{}')
    new.mkdir(parents=True)
    (new / 'tokenizer.json').symlink_to(Path('..', '..', 'blobs', blob.name))
    (entry / 'refs').mkdir()
    (entry / 'refs' / 'main').write_text('b' * 40)
    return entry


def test_resolves_a_hugging_face_cache_entry_through_refs_main(tmp_path: Path, tiny_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_hf_cache(tmp_path / 'hub', tiny_dir)
    want = entry / 'snapshots' / ('b' * 40) / 'tokenizer.json'
    assert resolve_tokenizer_file(entry) == want
    assert resolve_tokenizer_file(want.parent) == want
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    tok = Pi0Tokenizer.from_path('google/paligemma-3b-pt-224', L)
    assert tok.source == want
    direct = Pi0Tokenizer.from_path(tiny_dir / 'tokenizer.json', L)
    np.testing.assert_array_equal(tok.encode('open the top drawer')[0], direct.encode('open the top drawer')[0])


def test_repo_id_lookup_follows_hf_home(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_hf_cache(tmp_path / 'hf_home' / 'hub', tiny_dir)
    monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    monkeypatch.delenv('HUGGINGFACE_HUB_CACHE', raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
    assert resolve_tokenizer_file('google/paligemma-3b-pt-224').name == 'tokenizer.json'


def test_cache_entry_without_refs_main_needs_a_single_snapshot(tmp_path: Path, tiny_dir: Path) -> None:
    entry = make_hf_cache(tmp_path / 'hub', tiny_dir)
    (entry / 'refs' / 'main').unlink()
    with pytest.raises(TokenizerError, match='has no refs/main and 2 snapshots'):
        resolve_tokenizer_file(entry)
    (entry / 'snapshots' / ('a' * 40) / 'config.json').unlink()
    (entry / 'snapshots' / ('a' * 40)).rmdir()
    assert resolve_tokenizer_file(entry).parent.name == 'b' * 40


def test_refs_main_naming_a_missing_snapshot_is_an_error(tmp_path: Path, tiny_dir: Path) -> None:
    entry = make_hf_cache(tmp_path / 'hub', tiny_dir)
    (entry / 'refs' / 'main').write_text('c' * 40)
    with pytest.raises(TokenizerError, match="names revision 'c+' but .* is missing"):
        resolve_tokenizer_file(entry)


def test_path_errors_say_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TokenizerError, match='does not exist'):
        Pi0Tokenizer.from_path(tmp_path / 'nowhere' / 'tokenizer.json', L)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'empty_hub'))
    with pytest.raises(TokenizerError, match='neither an existing path nor a repo in the local Hugging Face cache'):
        Pi0Tokenizer.from_path('google/paligemma-3b-pt-224', L)
    (tmp_path / 'vocab.txt').write_text('a\nb\n')
    with pytest.raises(TokenizerError, match="unknown tokenizer file type 'vocab.txt'"):
        Pi0Tokenizer.from_path(tmp_path / 'vocab.txt', L)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(TokenizerError, match='holds neither tokenizer.json nor tokenizer.model'):
        Pi0Tokenizer.from_path(tmp_path / 'empty', L)


def test_unreadable_files_are_tokenizer_errors(tmp_path: Path) -> None:
    (tmp_path / 'tokenizer.json').write_text('{"not": "a tokenizer"')
    with pytest.raises(TokenizerError, match='cannot load tokenizer .*tokenizer.json'):
        Pi0Tokenizer.from_path(tmp_path / 'tokenizer.json', L)
    (tmp_path / 'tokenizer.model').write_bytes(b'not a model')
    with pytest.raises(TokenizerError, match='cannot load SentencePiece model'):
        Pi0Tokenizer.from_path(tmp_path / 'tokenizer.model', L)


@pytest.mark.parametrize('post_processor', [
    None,
    {'type': 'TemplateProcessing',
     'single': [{'SpecialToken': {'id': '<bos>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}},
                {'SpecialToken': {'id': '<eos>', 'type_id': 0}}],
     'pair': [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
     'special_tokens': {'<bos>': {'id': '<bos>', 'ids': [2], 'tokens': ['<bos>']},
                        '<eos>': {'id': '<eos>', 'ids': [1], 'tokens': ['<eos>']}}},
])
def test_tokenizer_json_must_prepend_bos_and_append_nothing(tmp_path: Path, tiny_dir: Path,
                                                            post_processor: dict | None) -> None:
    spec = json.loads((tiny_dir / 'tokenizer.json').read_text())
    spec['post_processor'] = post_processor
    (tmp_path / 'tokenizer.json').write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match='pi0 needs <bos> \\(id 2\\) prepended and nothing appended'):
        Pi0Tokenizer.from_path(tmp_path / 'tokenizer.json', L)


def test_tokenizers_without_pad_are_rejected(tmp_path: Path) -> None:
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel({'<bos>': 0, '<unk>': 1, 'a': 2}, unk_token='<unk>'))
    word_level.save(str(tmp_path / 'tokenizer.json'))
    with pytest.raises(TokenizerError, match='has no <pad> token'):
        Pi0Tokenizer.from_path(tmp_path / 'tokenizer.json', L)
    # SentencePiece's defaults have no pad piece (pad_id -1).
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / 'nopad'),
                                             vocab_size=200, minloglevel=2, num_threads=1)
    with pytest.raises(TokenizerError, match='defines no pad id'):
        Pi0Tokenizer.from_path(tmp_path / 'nopad.model', L)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('text,message', [
    ('', 'empty or whitespace only'),
    ('  \n\t ', 'empty or whitespace only'),
    (b'pick up the cube', 'must be str, got bytes'),
    (None, 'must be str, got NoneType'),
    (42, 'must be str, got int'),
])
def test_bad_instructions_raise(toks: dict[str, Pi0Tokenizer], kind: str, text: object, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        toks[kind].encode(text)  # type: ignore[arg-type]


@pytest.mark.parametrize('max_length', [0, -3, True, 4.0])
def test_max_length_must_be_a_positive_int(tiny_dir: Path, max_length: object) -> None:
    with pytest.raises(TokenizerError, match='max_length must be a positive int'):
        Pi0Tokenizer.from_path(tiny_dir, max_length)  # type: ignore[arg-type]


def test_encode_into_checks_its_buffers(toks: dict[str, Pi0Tokenizer]) -> None:
    tok = toks['tokenizer.json']
    mask = np.zeros(L, dtype=np.bool_)
    with pytest.raises(TokenizerError, match=r'ids_out must be a int64 array of shape \[48\], got int32 \[48\]'):
        tok.encode_into('open the drawer', np.zeros(L, dtype=np.int32), mask)
    with pytest.raises(TokenizerError, match=r'ids_out must be .* got int64 \[1, 48\]'):
        tok.encode_into('open the drawer', np.zeros((1, L), dtype=np.int64), mask)
    with pytest.raises(TokenizerError, match='mask_out must be a bool array of shape .* got list'):
        tok.encode_into('open the drawer', np.zeros(L, dtype=np.int64), [False] * L)  # type: ignore[arg-type]
    frozen = np.zeros(L, dtype=np.int64)
    frozen.flags.writeable = False
    with pytest.raises(TokenizerError, match='ids_out is read-only'):
        tok.encode_into('open the drawer', frozen, mask)
