# Embeds text files in a C header as one string literal macro, at build time:
#   cmake -DOUT=out.h -DNAME=MACRO_NAME -DFILES="a.lua|b.lua" -P embed.cmake
# The files are concatenated in the order given. Only what C needs escaping is escaped.
string(REPLACE "|" ";" FILES "${FILES}")
set(body "")
foreach(f IN LISTS FILES)
    file(READ "${f}" text)
    string(REPLACE "\\" "\\\\" text "${text}")
    string(REPLACE "\"" "\\\"" text "${text}")
    string(REPLACE "\n" "\\n\" \\\n    \"" text "${text}")
    string(APPEND body "    \"${text}\" \\\n")
endforeach()
file(WRITE "${OUT}.tmp" "/* Generated from ${FILES} by cmake/embed.cmake: do not edit. */\n#define ${NAME} \\\n${body}    \"\"\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
