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

r"""Build small PaliGemma-style tokenizers offline, for tests and the demo.

The real PaliGemma tokenizer (257,152 tokens) cannot be downloaded here. These builders train a
tiny SentencePiece BPE model on a fixed corpus of robot instructions embedded below, set up the
way Gemma's is: ``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3, ``"\n"`` a single token (4),
byte fallback, no dummy prefix, identity normalization. The ``tokenizer.json`` variant is that same
model converted the way Hugging Face converts Gemma's ``tokenizer.model`` (BPE with byte fallback,
``" "`` → ``"▁"`` normalizer, a post-processor that prepends ``<bos>``), so both files give the same
ids, as PaliGemma's pair does. Training is deterministic and takes a few tens of milliseconds.
"""

import io
import os
from pathlib import Path

# Gemma's special pieces and ids, in id order.
SPECIAL_TOKENS = ('<pad>', '<eos>', '<bos>', '<unk>')
NEWLINE_TOKEN = '\n'  # user-defined piece: always one token, id len(SPECIAL_TOKENS)

DEFAULT_VOCAB_SIZE = 512  # below the tiny test model's vocabulary (1024)

# Fixed training corpus; changing it changes every tiny tokenizer's ids.
CORPUS = (
    'pick up the red cube and place it in the bowl',
    'pick up the blue block',
    'pick up the green cup and put it on the plate',
    'place the yellow sponge in the sink',
    'put the apple in the basket',
    'put the spoon next to the bowl',
    'stack the blue block on top of the red block',
    'stack the cups from largest to smallest',
    'open the top drawer',
    'close the bottom drawer',
    'open the cabinet door',
    'close the microwave',
    'push the button',
    'press the green button twice',
    'pull the lever down',
    'turn the knob to the left',
    'turn on the faucet',
    'turn off the light switch',
    'move the arm to the left by 10 cm',
    'move the gripper up 5 cm',
    'rotate the wrist 90 degrees clockwise',
    'lower the end effector slowly',
    'raise the arm and hold',
    'go to the home position',
    'return to the start pose',
    'grasp the handle firmly',
    'release the object gently',
    'hand the tool to the person',
    'insert the peg into the hole',
    'remove the lid from the jar',
    'pour the water into the glass',
    'wipe the table with the towel',
    'fold the towel in half',
    'sort the blocks by color',
    'put all the red objects in the left bin',
    'put all the blue objects in the right bin',
    'slide the box to the edge of the table',
    'flip the pancake',
    'pick the marker and draw a line',
    'erase the whiteboard',
    'place the bottle upright',
    'transfer the cube from the left tray to the right tray',
    'align the block with the corner',
    'Pick up the screwdriver.',
    'Put the orange in the bowl, then close the drawer.',
    'Open the fridge and take out the milk.',
    'Place object 3 on shelf 2.',
    'Move forward 0.5 m and stop!',
    'Grab the small white ball?',
    'Use the left arm: pick the can; place it in the box.',
    'Stack 4 blocks (red, blue, green, yellow).',
    'Put the knife back in its holder.',
    'Unplug the cable and coil it.',
    'Screw the cap onto the bottle.',
    'Hang the mug on the hook.',
    'Scoop the beans with the spoon.',
    'Zip the bag quickly.',
    'Lift the jug, pour, and set it down.',
)


def build_tiny_sentencepiece(out_path: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Train the tiny SentencePiece BPE model and write it to ``out_path`` (a ``tokenizer.model``).

    The model has at most ``vocab_size`` pieces (fewer if the corpus runs out of merges).
    Returns the written path.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_train_sentencepiece(vocab_size))
    return out


def build_tiny_tokenizer_json(out_path: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    """Write a Hugging Face fast-tokenizer ``tokenizer.json`` for the tiny model to ``out_path``.

    It is the model of :func:`build_tiny_sentencepiece` (same ``vocab_size``) converted as Hugging
    Face converts Gemma's, so it encodes every text to the same ids. Returns the written path.
    """
    from tokenizers import AddedToken, decoders, models, normalizers, processors, Tokenizer
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=_train_sentencepiece(vocab_size))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    # BPE merges: every split of a merged piece into two vocabulary pieces, ranked by the merged
    # piece's score. SentencePiece BPE scores fall with the id, so the rank is the id order.
    merges: list[tuple[str, str]] = []
    for i, piece in enumerate(pieces):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or piece == NEWLINE_TOKEN:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(splits, key=lambda pair: (vocab[pair[0]], vocab[pair[1]])))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token='<unk>', fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(' ', '\u2581')
    tok.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(NEWLINE_TOKEN, normalized=False, special=False)])
    tok.post_processor = processors.TemplateProcessing(
        single='<bos>:0 $A:0',
        pair='<bos>:0 $A:0 <bos>:1 $B:1',
        special_tokens=[('<bos>', sp.bos_id())],
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


def _train_sentencepiece(vocab_size: int) -> bytes:
    """Train the tiny Gemma-style SentencePiece BPE model on ``CORPUS``; return the serialized model."""
    import sentencepiece

    min_size = len(SPECIAL_TOKENS) + 1 + 256 + len(set(''.join(CORPUS)))  # specials, '\n', bytes, chars
    if vocab_size < min_size:
        raise ValueError(f'vocab_size {vocab_size} is too small: the tiny tokenizer needs at least {min_size}')
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type='bpe',
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # the corpus is small: stop when merges run out
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece=SPECIAL_TOKENS[0], eos_piece=SPECIAL_TOKENS[1],
        bos_piece=SPECIAL_TOKENS[2], unk_piece=SPECIAL_TOKENS[3],
        user_defined_symbols=[NEWLINE_TOKEN],
        normalization_rule_name='identity',
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()
