/* Embeds the dashboard's page (src/api/ui/index.html: HTML, CSS and JS in
 * one file) so GET /ui needs no file at run time. The path comes from CMake
 * (AIOS_UI_HTML). */
    .section .rodata
    .global aios_ui_html
    .global aios_ui_html_end
aios_ui_html:
    .incbin AIOS_UI_HTML
aios_ui_html_end:
    .byte 0
    .section .note.GNU-stack,"",@progbits
