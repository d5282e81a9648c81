"""Offline stand-ins of the hub artifacts the real recipe uses: random weights, real architectures and formats.

`zalo-music standins --out DIR` (`zalo_music.standins.build.build_standins`) writes a Hugging Face cache
(`DIR/hf`, HF_HOME layout) with facebook/musicgen-small, facebook/encodec_32khz, t5-base, roberta-base and the
bert-base-uncased / facebook/bart-base tokenizers, and a reference folder (`DIR/reference`) with the LAION-CLAP
music checkpoint (`zalo_music.standins.clap`). With `HF_HOME=DIR/hf HF_HUB_OFFLINE=1
ZALO_MUSIC_REFERENCE_DIR=DIR/reference` every hub name resolves. They prove plumbing, not quality.
"""
