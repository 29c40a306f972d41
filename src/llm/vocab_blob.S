/* Embeds llama.cpp's Qwen2 tokenizer (models/ggml-vocab-qwen2.gguf) so that
 * `aios model create-test` and the built-in test model need no file at run
 * time. The path comes from CMake (AIOS_VOCAB_PATH). */
    .section .rodata
    .global aios_vocab_qwen2
    .global aios_vocab_qwen2_end
    .balign 64
aios_vocab_qwen2:
    .incbin AIOS_VOCAB_PATH
aios_vocab_qwen2_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits
