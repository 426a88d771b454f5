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

r"""Turn an instruction into the fixed-length token ids and mask that pi0 takes.

This reproduces LeRobot 0.6.1's pi0 preprocessor: ``Pi0NewLineProcessor`` appends ``"\n"`` to the
task unless it already ends with one, then PaliGemma's tokenizer (``google/paligemma-3b-pt-224``)
encodes it with its own specials (``<bos>`` prepended, nothing appended), truncates to
``max_length`` tokens (``<bos>`` included) and right-pads with ``<pad>`` (id 0); the mask is True on
real tokens. That is what ``AutoTokenizer(...)(text, max_length=L, padding='max_length',
truncation=True, padding_side='right')`` returns.

The tokenizer is loaded offline from what the user has: a ``tokenizer.json`` (Hugging Face fast
tokenizer, read with ``tokenizers``), a ``tokenizer.model`` (SentencePiece), a directory holding
either (``tokenizer.json`` preferred, as ``AutoTokenizer`` does), a Hugging Face cache entry
(``models--google--paligemma-3b-pt-224``, resolved through ``refs/main``), or a repo id looked up in
the local Hugging Face cache. Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
from typing import Callable, NamedTuple

import numpy as np

from pi0_trt_ros.errors import BackendUnavailableError, TokenizerError

PALIGEMMA_REPO_ID = 'google/paligemma-3b-pt-224'  # the tokenizer LeRobot's pi0 uses
BOS_TOKEN = '<bos>'
PAD_TOKEN = '<pad>'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer.model')  # in order of preference

_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')


class EncodeInfo(NamedTuple):
    """What :meth:`Pi0Tokenizer.encode_into` wrote."""

    num_tokens: int  # real tokens written (mask True), <bos> included; at most max_length
    full_length: int  # tokens the instruction has before truncation, <bos> and '\n' included

    @property
    def truncated(self) -> bool:
        r"""Whether tokens past ``max_length`` were dropped (the trailing '\n' among them)."""
        return self.full_length > self.num_tokens


class Pi0Tokenizer:
    r"""PaliGemma tokenization as pi0 expects it: ``<bos>`` + text + ``"\n"``, right-padded to L.

    Build it with :meth:`from_path`. Encoding allocates (the tokenizer libraries return lists), so
    call it when the instruction changes, not on the control loop's hot path.
    """

    def __init__(self, token_ids: Callable[[str], list[int]], *, max_length: int, bos_id: int, pad_id: int,
                 vocab_size: int, source: Path, kind: str) -> None:
        """Wrap ``token_ids`` (text → ids with ``<bos>`` first, untruncated); use :meth:`from_path`."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise TokenizerError(f'max_length must be a positive int, got {max_length!r}')
        self._token_ids = token_ids
        self.max_length = max_length  # L, the checkpoint's tokenizer_max_length
        self.bos_id = bos_id
        self.pad_id = pad_id
        self.vocab_size = vocab_size  # ids are < vocab_size; check against the model's embedding table
        self.source = source  # the tokenizer file actually loaded
        self.kind = kind  # 'tokenizer.json' or 'tokenizer.model'

    @classmethod
    def from_path(cls, path: str | os.PathLike, max_length: int) -> Pi0Tokenizer:
        """Load the tokenizer at ``path`` (file, directory, HF cache entry or cached repo id), offline."""
        source = resolve_tokenizer_file(path)
        if source.suffix == '.json':
            kind = 'tokenizer.json'
            token_ids, bos_id, pad_id, vocab_size = _load_tokenizer_json(source)
        else:
            kind = 'tokenizer.model'
            token_ids, bos_id, pad_id, vocab_size = _load_sentencepiece(source)
        return cls(token_ids, max_length=max_length, bos_id=bos_id, pad_id=pad_id, vocab_size=vocab_size,
                   source=source, kind=kind)

    def __repr__(self) -> str:
        """Name the file, its kind and the sizes, for logs."""
        return (f'Pi0Tokenizer(source={str(self.source)!r}, kind={self.kind!r}, vocab_size={self.vocab_size}, '
                f'max_length={self.max_length})')

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Return new arrays ``(ids int64 [L], mask bool [L])`` for ``text``.

        Use :meth:`encode_into` to write into staged buffers and learn whether the text was truncated.
        """
        ids = np.empty(self.max_length, dtype=np.int64)
        mask = np.empty(self.max_length, dtype=np.bool_)
        self.encode_into(text, ids, mask)
        return ids, mask

    def encode_into(self, text: str, ids_out: np.ndarray, mask_out: np.ndarray) -> EncodeInfo:
        """Write ``text``'s ids into ``ids_out`` (int64 [L]) and its mask into ``mask_out`` (bool [L]).

        Raises TokenizerError for a non-str, empty or whitespace-only instruction or a wrong buffer;
        the buffers are left untouched then, so the previous instruction stays staged.
        """
        _check_buffer(ids_out, np.int64, self.max_length, 'ids_out')
        _check_buffer(mask_out, np.bool_, self.max_length, 'mask_out')
        full = self.token_ids(text)
        n = min(len(full), self.max_length)
        ids_out[:n] = full[:n]
        ids_out[n:] = self.pad_id
        mask_out[:n] = True
        mask_out[n:] = False
        return EncodeInfo(num_tokens=n, full_length=len(full))

    def token_ids(self, text: str) -> list[int]:
        r"""Return the untruncated, unpadded ids of ``text``: ``<bos>``, the text's tokens, ``"\n"``'s."""
        if not isinstance(text, str):
            raise TokenizerError(f'instruction must be str, got {type(text).__name__} (decode UTF-8 bytes first)')
        if not text.strip():
            raise TokenizerError(f'instruction is empty or whitespace only: {text!r}')
        if not text.endswith('\n'):
            text += '\n'  # Pi0NewLineProcessor
        return self._token_ids(text)


def resolve_tokenizer_file(path: str | os.PathLike) -> Path:
    """Find the tokenizer file that ``path`` names, without touching the network.

    ``path`` is a ``tokenizer.json`` / ``*.json`` or ``tokenizer.model`` / ``*.model`` file, a
    directory holding one, a Hugging Face cache entry (``models--org--name`` with ``refs/main`` and
    ``snapshots/<rev>/``), or a repo id such as ``google/paligemma-3b-pt-224`` in the local cache.
    """
    given = Path(path).expanduser()
    if given.is_file():
        if given.suffix not in ('.json', '.model'):
            raise TokenizerError(f'unknown tokenizer file type {given.name!r} ({given}): expected a tokenizer.json '
                                 '(Hugging Face tokenizers) or a tokenizer.model (SentencePiece)')
        return given
    if given.is_dir():
        if (given / 'snapshots').is_dir() and not any((given / name).is_file() for name in TOKENIZER_FILES):
            return _file_in_dir(_snapshot_dir(given))
        return _file_in_dir(given)
    if _REPO_ID.match(str(path)) and not given.is_absolute():
        cache = _hub_cache_dir()
        entry = cache / ('models--' + str(path).replace('/', '--'))
        if entry.is_dir():
            return _file_in_dir(_snapshot_dir(entry))
        raise TokenizerError(
            f'tokenizer {str(path)!r} is neither an existing path nor a repo in the local Hugging Face cache '
            f'({entry} is missing). Pass the path of a tokenizer.json or tokenizer.model, or fetch it where a '
            f'network is (`hf download {path} tokenizer.json tokenizer.model`; PaliGemma is gated, accept its '
            'licence first) and copy the cache entry here.')
    raise TokenizerError(f'tokenizer path {str(path)!r} does not exist')


def _file_in_dir(directory: Path) -> Path:
    """Return the preferred tokenizer file inside ``directory``."""
    for name in TOKENIZER_FILES:
        if (directory / name).is_file():
            return directory / name
    raise TokenizerError(f'{directory} holds neither {TOKENIZER_FILES[0]} nor {TOKENIZER_FILES[1]}')


def _snapshot_dir(entry: Path) -> Path:
    """Return the snapshot of a Hugging Face cache entry that ``refs/main`` names (or the only one)."""
    ref = entry / 'refs' / 'main'
    if ref.is_file():
        revision = ref.read_text().strip()
        snapshot = entry / 'snapshots' / revision
        if not snapshot.is_dir():
            raise TokenizerError(f'{ref} names revision {revision!r} but {snapshot} is missing')
        return snapshot
    snapshots = sorted(p for p in (entry / 'snapshots').glob('*') if p.is_dir())
    if len(snapshots) != 1:
        raise TokenizerError(f'{entry} has no refs/main and {len(snapshots)} snapshots; pass the snapshot '
                             'directory itself')
    return snapshots[0]


def _hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder, following huggingface_hub's environment variables."""
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get('HF_HOME'):
        return Path(os.environ['HF_HOME']).expanduser() / 'hub'
    xdg = os.environ.get('XDG_CACHE_HOME') or '~/.cache'
    return Path(xdg).expanduser() / 'huggingface' / 'hub'


def _load_tokenizer_json(source: Path) -> tuple[Callable[[str], list[int]], int, int, int]:
    """Load a Hugging Face ``tokenizer.json``; return (text → ids, bos id, pad id, vocab size)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise BackendUnavailableError(f'reading {source.name} needs the `tokenizers` package: '
                                      'pip install tokenizers') from None
    try:
        tok = Tokenizer.from_file(str(source))
    except Exception as err:  # the library raises a bare Exception for malformed files
        raise TokenizerError(f'cannot load tokenizer {source}: {err}') from None
    tok.no_truncation()  # truncation and padding are done here, as the HF call does them
    tok.no_padding()
    bos_id, pad_id = tok.token_to_id(BOS_TOKEN), tok.token_to_id(PAD_TOKEN)
    for name, token_id in ((BOS_TOKEN, bos_id), (PAD_TOKEN, pad_id)):
        if token_id is None:
            raise TokenizerError(f"{source} has no {name} token; pi0 needs PaliGemma's tokenizer")
    probe, plain = tok.encode('a').ids, tok.encode('a', add_special_tokens=False).ids
    if probe != [bos_id] + plain:
        raise TokenizerError(f'{source}: its post-processor turns {plain} into {probe}, but pi0 needs {BOS_TOKEN} '
                             f"(id {bos_id}) prepended and nothing appended, as PaliGemma's tokenizer.json does")

    def token_ids(text: str) -> list[int]:
        return tok.encode(text).ids

    return token_ids, bos_id, pad_id, tok.get_vocab_size(with_added_tokens=True)


def _load_sentencepiece(source: Path) -> tuple[Callable[[str], list[int]], int, int, int]:
    """Load a SentencePiece ``tokenizer.model``; return (text → ids with bos, bos id, pad id, vocab size)."""
    try:
        import sentencepiece
    except ImportError:
        raise BackendUnavailableError(f'reading {source.name} needs the `sentencepiece` package: '
                                      'pip install sentencepiece') from None
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(source))
    except (OSError, RuntimeError) as err:
        raise TokenizerError(f'cannot load SentencePiece model {source}: {err}') from None
    bos_id, pad_id = sp.bos_id(), sp.pad_id()
    for name, token_id in (('bos', bos_id), ('pad', pad_id)):
        if token_id < 0:
            raise TokenizerError(f"{source} defines no {name} id; pi0 needs PaliGemma's tokenizer")

    # Hugging Face splits special-token strings ('<eos>', ...) out of the text before the model sees
    # it; SentencePiece only does so for user-defined pieces, so do it here for control/unk pieces.
    specials = {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    split = re.compile('|'.join(re.escape(piece) for piece in sorted(specials, key=len, reverse=True)))

    def token_ids(text: str) -> list[int]:
        ids = [bos_id]  # HF's Gemma tokenizers prepend <bos> the same way
        start = 0
        for match in split.finditer(text):
            ids += sp.encode(text[start:match.start()], out_type=int)
            ids.append(specials[match.group()])
            start = match.end()
        ids += sp.encode(text[start:], out_type=int)
        return ids

    return token_ids, bos_id, pad_id, sp.get_piece_size()


def _check_buffer(array: np.ndarray, dtype: type, length: int, name: str) -> None:
    """Raise TokenizerError unless ``array`` is a writable ``dtype`` array of shape [length]."""
    if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != (length,):
        got = f'{array.dtype} {list(array.shape)}' if isinstance(array, np.ndarray) else type(array).__name__
        raise TokenizerError(f'{name} must be a {np.dtype(dtype)} array of shape [{length}], got {got}')
    if not array.flags.writeable:
        raise TokenizerError(f'{name} is read-only')
