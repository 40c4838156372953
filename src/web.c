/*
 * web: see web.h.  The page is embedded with the assembler's .incbin, so
 * web/dashboard.html stays an ordinary file to edit and no generated source
 * is needed; the Makefile makes web.o depend on it.  The path is relative
 * to the directory the compiler runs in, which is the repository root
 * (make runs there).  A NUL byte follows the page so it is also a C string.
 */
#include "web.h"

#include <stdint.h>

__asm__(".pushsection .rodata\n"
        ".global zephyr_web_page\n"
        ".hidden zephyr_web_page\n"
        ".type zephyr_web_page, @object\n"
        "zephyr_web_page:\n"
        ".incbin \"web/dashboard.html\"\n"
        "zephyr_web_page_end:\n"
        ".byte 0\n"
        ".balign 8\n"
        ".global zephyr_web_page_size\n"
        ".hidden zephyr_web_page_size\n"
        ".type zephyr_web_page_size, @object\n"
        "zephyr_web_page_size:\n"
        ".quad zephyr_web_page_end - zephyr_web_page\n"
        ".popsection\n");

/* The page's bytes and their number, both defined by the block above. */
extern const char zephyr_web_page[] __attribute__((visibility("hidden")));
extern const uint64_t zephyr_web_page_size __attribute__((visibility("hidden")));

const char *web_dashboard_page(size_t *len)
{
    if (len)
        *len = (size_t)zephyr_web_page_size;
    return zephyr_web_page;
}

/* The sign-in page (see web.h): small enough to live here as a string. */
static const char web_login[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<meta name=\"referrer\" content=\"no-referrer\">\n"
    "<title>claude-zephyr: access key</title>\n"
    "<style>\n"
    ":root { color-scheme: dark; }\n"
    "body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;\n"
    "  background: #0f1419; color: #d8dee9; font: 14px/1.4 system-ui, sans-serif; }\n"
    "form { background: #161c24; border: 1px solid #263040; border-radius: 8px; padding: 20px 24px;\n"
    "  display: grid; gap: 10px; min-width: 300px; }\n"
    "h1 { font-size: 17px; margin: 0; font-weight: 600; } h1 span { color: #a371f7; }\n"
    "p { margin: 0; color: #8491a5; font-size: 13px; }\n"
    "input, button { font: inherit; color: #d8dee9; background: #1f2733; border: 1px solid #34404f;\n"
    "  border-radius: 6px; padding: 6px 10px; }\n"
    "button { cursor: pointer; }\n"
    "#err { color: #f85149; min-height: 18px; }\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<form id=\"login\" autocomplete=\"off\">\n"
    "  <h1>claude-<span>zephyr</span></h1>\n"
    "  <p>This proxy requires its access key (server.access_key_env).<br>It is kept for this tab only.</p>\n"
    "  <input id=\"key\" type=\"password\" placeholder=\"access key\" aria-label=\"access key\" autofocus>\n"
    "  <button id=\"open\" type=\"submit\">open the dashboard</button>\n"
    "  <p id=\"err\" role=\"alert\"></p>\n"
    "</form>\n"
    "<script>\n"
    "(function () {\n"
    "  \"use strict\";\n"
    "  var NAME = \"zephyr-access-key\";\n"
    "  var err = document.getElementById(\"err\");\n"
    "  function open(key) {\n"
    "    fetch(location.pathname, { headers: { \"x-zephyr-key\": key }, cache: \"no-store\",\n"
    "                               credentials: \"same-origin\" })\n"
    "      .then(function (r) {\n"
    "        if (r.status === 401) throw new Error(\"wrong access key\");\n"
    "        if (!r.ok) throw new Error(\"HTTP \" + r.status);\n"
    "        return r.text();\n"
    "      })\n"
    "      .then(function (html) {\n"
    "        try { sessionStorage.setItem(NAME, key); } catch (e) { /* storage disabled */ }\n"
    "        document.open();\n"
    "        document.write(html);\n"
    "        document.close();\n"
    "      })\n"
    "      .catch(function (e) {\n"
    "        try { sessionStorage.removeItem(NAME); } catch (e2) { /* storage disabled */ }\n"
    "        err.textContent = e && e.message ? e.message : String(e);\n"
    "      });\n"
    "  }\n"
    "  document.getElementById(\"login\").addEventListener(\"submit\", function (ev) {\n"
    "    ev.preventDefault();\n"
    "    err.textContent = \"\";\n"
    "    var k = document.getElementById(\"key\").value;\n"
    "    if (k) open(k);\n"
    "  });\n"
    "  var saved = null;\n"
    "  try { saved = sessionStorage.getItem(NAME); } catch (e) { saved = null; }\n"
    "  if (saved) open(saved);\n"
    "})();\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";

const char *web_login_page(size_t *len)
{
    if (len)
        *len = sizeof web_login - 1;
    return web_login;
}
