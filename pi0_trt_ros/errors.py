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

"""Exceptions raised by pi0_trt_ros library code.

Each names what is wrong and, where it can, what to do about it.
"""


class Pi0Error(Exception):
    """Base class of every error this package raises on purpose."""


class CheckpointError(Pi0Error):
    """A LeRobot checkpoint directory is missing, incomplete or inconsistent."""


class TokenizerError(Pi0Error):
    """The tokenizer file cannot be loaded or the instruction cannot be tokenized."""


class ExportError(Pi0Error):
    """Exporting the model to ONNX failed, or an export directory is unusable."""


class EngineError(Pi0Error):
    """A TensorRT engine cannot be built or loaded (wrong GPU, version, tensors)."""


class RunnerError(Pi0Error):
    """A runner was used wrongly: inactive, or fed an observation of the wrong form."""


class BackendUnavailableError(Pi0Error):
    """A backend's Python package is not installed; the message says what to install."""
