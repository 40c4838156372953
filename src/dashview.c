/*
 * dashview: see dashview.h.
 *
 * A frame, top to bottom:
 *
 *   row 0       title bar: version, the proxy's address, uptime, traffic
 *   row 1       mode (and pin), panic routing, group, current endpoint,
 *               a pending switch, the switch threshold
 *   row 2       next check (or the time until a running check times out),
 *               load level, check interval, tokens, retries, check method
 *   body        the endpoint table (cursor, current mark, status mark,
 *               status, smoothed and last latency, sparkline, success
 *               rate, circuit, requests now, requests, failures, last
 *               error), the requests in flight, and recent events or the
 *               log (both side by side from DV_SIDE_BY_SIDE_COLS on); or
 *               the help page; or why there is nothing to show
 *   row R-2     the outcome of the last key (or the shutdown notice)
 *   row R-1     the keys
 *
 * The body gives the endpoint table what it needs first (keeping room for
 * a header and one row in each of the other two sections), then splits the
 * rest between requests and events.  Rows are laid out by priority (see
 * bar_render and ep_layout): whole items and columns give way, so that a
 * number is never cut.  Everything is cut to the screen width here, so the
 * drawer only copies spans.
 */
#include "dashview.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* ---- texts ----------------------------------------------------------------- */

enum dv_text {
    T_MODE = 0,
    T_AUTO,
    T_MANUAL,
    T_PINNED,
    T_PIN_DOWN,
    T_GROUP,
    T_CURRENT,
    T_NONE,
    T_NEXT_CHECK,
    T_CHECKING,
    T_PAUSED,
    T_SWITCHING,
    T_LOAD,
    T_INTERVAL,
    T_DYNAMIC,
    T_CHECK_TOKENS,
    T_TRAFFIC,
    T_IN,
    T_OUT,
    T_REQUESTS,
    T_RETRIES,
    T_UP,
    T_ACTIVE,
    T_COL_ENDPOINT,
    T_COL_STATUS,
    T_COL_LATENCY,
    T_COL_HISTORY,
    T_COL_OK,
    T_COL_CIRCUIT,
    T_COL_NOW,
    T_COL_REQS,
    T_COL_FAIL,
    T_COL_ERROR,
    T_ALL_GROUPS,
    T_HEALTHY,
    T_FAILED,
    T_EP_CHECKING,
    T_UNKNOWN,
    T_AUTH_FAILED,
    T_CHECK_ERROR,
    T_CLOSED,
    T_OPEN,
    T_HALF_OPEN,
    T_REST,
    T_ACTIVE_REQUESTS,
    T_NO_REQUESTS,
    T_MORE,
    T_RETRY,
    T_ST_READING,
    T_ST_WAITING,
    T_ST_STREAMING,
    T_ST_DONE,
    T_EVENTS,
    T_NO_EVENTS,
    T_LOG,
    T_NO_LOG,
    T_EV_SWITCH,
    T_EV_FAILURE,
    T_EV_RECOVERY,
    T_EV_INFO,
    T_K_QUIT,
    T_K_CHECK,
    T_K_PAUSE,
    T_K_RESUME,
    T_K_MODE,
    T_K_MOVE,
    T_K_PIN,
    T_K_GROUP,
    T_K_ALL,
    T_K_LOG,
    T_K_HELP,
    T_CANNOT_REACH,
    T_WAITING_STATUS,
    T_QUITTING,
    T_REMOTE,
    T_TOO_SMALL,
    T_NO_ENDPOINTS,
    T_DO_CHECK,
    T_DO_PAUSE,
    T_DO_RESUME,
    T_DO_MODE,
    T_DO_PIN,
    T_DO_GROUP,
    T_ONE_GROUP,
    T_NO_STATUS,
    T_NOTHING_TO_PIN,
    T_HELP_TITLE,
    T_H_QUIT,
    T_H_CHECK,
    T_H_PAUSE,
    T_H_MODE,
    T_H_MOVE,
    T_H_PIN,
    T_H_GROUP,
    T_H_ALL,
    T_H_LOG,
    T_H_HELP,
    T_H_MARKS,
    T_H_MARKS1,
    T_H_MARKS2,
    T_H_SPARK,
    T_COL_SMOOTHED,
    T_COL_LAST,
    T_UNTIL_TIMEOUT,
    T_PANIC,
    T_FALLBACK,
    T_SWITCH_AT,
    T_METHOD,
    T_LOAD_IDLE,
    T_LOAD_LIGHT,
    T_LOAD_BUSY,
    T_M_MESSAGES,
    T_M_COUNT_TOKENS,
    T_M_CLI,
    T_LOG_REMOTE,
    T_COL_SESS,
    T_SESSIONS,
    T_NO_SESSIONS,
    T_SESS_OFF,
    T_SESS_COLS,
    T_K_SESSIONS,
    T_K_RELEASE,
    T_H_SESSIONS,
    T_H_RELEASE,
    T_DO_RELEASE,
    T_DO_RELEASE_ALL,
    T_SESS_KEEP,
    T_COUNT
};

static const char *const texts[T_COUNT][2] = {
    [T_MODE] = {"Mode", "模式"},
    [T_AUTO] = {"auto", "自动"},
    [T_MANUAL] = {"manual", "手动"},
    [T_PINNED] = {"pinned", "固定"},
    [T_PIN_DOWN] = {"is unhealthy", "不可用"},
    [T_GROUP] = {"Group", "分组"},
    [T_CURRENT] = {"Current", "当前"},
    [T_NONE] = {"none", "无"},
    [T_NEXT_CHECK] = {"Next check", "下次检查"},
    [T_CHECKING] = {"checking", "检查中"},
    [T_PAUSED] = {"paused", "已暂停"},
    [T_SWITCHING] = {"switching to", "即将切换到"},
    [T_LOAD] = {"Load", "负载"},
    [T_INTERVAL] = {"Interval", "检查间隔"},
    [T_DYNAMIC] = {"dynamic", "动态"},
    [T_CHECK_TOKENS] = {"Check tokens", "检查消耗令牌"},
    [T_TRAFFIC] = {"Traffic tokens", "流量令牌"},
    [T_IN] = {"in", "入"},
    [T_OUT] = {"out", "出"},
    [T_REQUESTS] = {"requests", "请求"},
    [T_RETRIES] = {"retries", "重试"},
    [T_UP] = {"up", "运行"},
    [T_ACTIVE] = {"active", "活动"},
    [T_COL_ENDPOINT] = {"ENDPOINT", "端点"},
    [T_COL_STATUS] = {"STATUS", "状态"},
    [T_COL_LATENCY] = {"LATENCY", "延迟"},
    [T_COL_HISTORY] = {"HISTORY", "历史"},
    [T_COL_OK] = {"OK%", "成功"},
    [T_COL_CIRCUIT] = {"CIRCUIT", "熔断"},
    [T_COL_NOW] = {"NOW", "并发"},
    [T_COL_REQS] = {"REQS", "请求"},
    [T_COL_FAIL] = {"FAIL", "失败"},
    [T_COL_ERROR] = {"LAST ERROR", "最近错误"},
    [T_ALL_GROUPS] = {"all groups", "全部分组"},
    [T_HEALTHY] = {"healthy", "健康"},
    [T_FAILED] = {"failed", "失败"},
    [T_EP_CHECKING] = {"checking", "检查中"},
    [T_UNKNOWN] = {"unknown", "未知"},
    [T_AUTH_FAILED] = {"auth fail", "认证失败"},
    [T_CHECK_ERROR] = {"check err", "检查配置错"},
    [T_CLOSED] = {"closed", "闭合"},
    [T_OPEN] = {"open", "断开"},
    [T_HALF_OPEN] = {"half-open", "半开"},
    [T_REST] = {"429", "限流"},
    [T_ACTIVE_REQUESTS] = {"ACTIVE REQUESTS", "活动请求"},
    [T_NO_REQUESTS] = {"no requests in flight", "没有进行中的请求"},
    [T_MORE] = {"more", "更多"},
    [T_RETRY] = {"try", "尝试"},
    [T_ST_READING] = {"reading", "读取请求"},
    [T_ST_WAITING] = {"waiting", "等待响应"},
    [T_ST_STREAMING] = {"streaming", "流式传输"},
    [T_ST_DONE] = {"done", "完成"},
    [T_EVENTS] = {"RECENT EVENTS", "最近事件"},
    [T_NO_EVENTS] = {"no events yet", "暂无事件"},
    [T_LOG] = {"LOG", "日志"},
    [T_NO_LOG] = {"no log lines", "暂无日志"},
    [T_EV_SWITCH] = {"switch", "切换"},
    [T_EV_FAILURE] = {"failure", "故障"},
    [T_EV_RECOVERY] = {"recovery", "恢复"},
    [T_EV_INFO] = {"info", "信息"},
    [T_K_QUIT] = {"quit", "退出"},
    [T_K_CHECK] = {"check", "检查"},
    [T_K_PAUSE] = {"pause", "暂停"},
    [T_K_RESUME] = {"resume", "恢复"},
    [T_K_MODE] = {"mode", "模式"},
    [T_K_MOVE] = {"move", "移动"},
    [T_K_PIN] = {"pin", "固定"},
    [T_K_GROUP] = {"group", "分组"},
    [T_K_ALL] = {"all", "全部"},
    [T_K_LOG] = {"log", "日志"},
    [T_K_HELP] = {"help", "帮助"},
    [T_CANNOT_REACH] = {"cannot reach", "无法连接"},
    [T_WAITING_STATUS] = {"waiting for the first /status ...", "正在等待 /status ..."},
    [T_QUITTING] = {"shutting down: waiting for the requests in flight (Ctrl-C again: now)",
                    "正在关闭：等待进行中的请求完成（再按 Ctrl-C 强制退出）"},
    [T_REMOTE] = {"remote", "远程"},
    [T_TOO_SMALL] = {"terminal too small", "终端太小"},
    [T_NO_ENDPOINTS] = {"no endpoints", "没有端点"},
    [T_DO_CHECK] = {"check started", "已开始检查"},
    [T_DO_PAUSE] = {"checks paused", "已暂停检查"},
    [T_DO_RESUME] = {"checks resumed", "已恢复检查"},
    [T_DO_MODE] = {"mode", "模式"},
    [T_DO_PIN] = {"pinned", "已固定"},
    [T_DO_GROUP] = {"group", "分组"},
    [T_ONE_GROUP] = {"there is only one group", "只有一个分组"},
    [T_NO_STATUS] = {"no status yet", "还没有状态"},
    [T_NOTHING_TO_PIN] = {"no endpoint under the cursor", "光标处没有端点"},
    [T_HELP_TITLE] = {"KEYS", "按键"},
    [T_H_QUIT] = {"quit (requests in flight get their grace period)",
                  "退出（进行中的请求可在宽限期内完成）"},
    [T_H_CHECK] = {"run a health check now", "立即运行健康检查"},
    [T_H_PAUSE] = {"pause or resume the periodic checks", "暂停或恢复定期检查"},
    [T_H_MODE] = {"switch between auto and manual mode", "在自动与手动模式之间切换"},
    [T_H_MOVE] = {"move the cursor over the endpoints", "在端点之间移动光标"},
    [T_H_PIN] = {"pin the endpoint under the cursor (manual mode)", "固定光标处的端点（手动模式）"},
    [T_H_GROUP] = {"make the next group current", "切换到下一个分组"},
    [T_H_ALL] = {"list every group's endpoints, or the current group's",
                 "显示全部分组的端点，或仅当前分组"},
    [T_H_LOG] = {"show the log instead of the events", "显示日志而不是事件"},
    [T_H_HELP] = {"close this help", "关闭帮助"},
    [T_H_MARKS] = {"MARKS", "标记"},
    [T_H_MARKS1] = {"current endpoint    > cursor", "当前端点    > 光标"},
    [T_H_MARKS2] = {"healthy", "健康"},
    [T_H_SPARK] = {"history: latencies of recent checks, oldest on the left; x = failed",
                   "历史：最近检查的延迟，左旧右新；x = 失败"},
    [T_COL_SMOOTHED] = {"SMOOTHED", "平滑延迟"},
    [T_COL_LAST] = {"LAST", "最近"},
    [T_UNTIL_TIMEOUT] = {"until timeout", "后超时"},
    [T_PANIC] = {"panic routing: no endpoint passes its checks", "应急路由：没有端点通过检查"},
    [T_FALLBACK] = {"fallback: served by group", "回退：由分组提供服务"},
    [T_SWITCH_AT] = {"switches when another is faster by", "切换条件：平滑延迟快"},
    [T_METHOD] = {"Check", "检查方式"},
    [T_LOAD_IDLE] = {"idle", "空闲"},
    [T_LOAD_LIGHT] = {"light", "轻度"},
    [T_LOAD_BUSY] = {"busy", "繁忙"},
    [T_M_MESSAGES] = {"messages", "消息请求"},
    [T_M_COUNT_TOKENS] = {"count_tokens", "令牌计数"},
    [T_M_CLI] = {"cli", "命令行"},
    [T_LOG_REMOTE] = {"the log is not available with --connect: read the proxy's server.log_file",
                      "--connect 模式下无法查看日志：请查看代理的 server.log_file"},
    [T_COL_SESS] = {"SESS", "会话"},
    [T_SESSIONS] = {"SESSIONS", "会话"},
    [T_NO_SESSIONS] = {"no sessions", "没有会话"},
    [T_SESS_OFF] = {"sticky sessions are off", "会话粘滞已关闭"},
    [T_SESS_COLS] = {"id        endpoint            age     idle",
                     "编号      端点                时长    空闲"},
    [T_K_SESSIONS] = {"sessions", "会话"},
    [T_K_RELEASE] = {"release", "释放"},
    [T_H_SESSIONS] = {"show the sessions instead of the events", "显示会话而不是事件"},
    [T_H_RELEASE] = {"release the sessions of the endpoint under the cursor (X: all)",
                     "释放光标处端点的会话（X：全部）"},
    [T_DO_RELEASE] = {"sessions released:", "已释放会话："},
    [T_DO_RELEASE_ALL] = {"all sessions released", "已释放全部会话"},
    [T_SESS_KEEP] = {"a session stays on its endpoint (prompt cache) unless it fails, a pin, or "
                     "another is faster by",
                     "会话保持在原端点（提示缓存），除非端点故障、手动固定，或另一端点快"},
};

static const char *tr(const struct dv_view *v, enum dv_text t)
{
    return texts[t][v->lang == DV_LANG_ZH ? 1 : 0];
}

/* ---- JSON access (never trusting the document) ------------------------ */

static const cJSON *jget(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = jget(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static bool jnum(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = jget(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    *out = v->valuedouble;
    return true;
}

static double jnum_or(const cJSON *o, const char *key, double dflt)
{
    double d;
    return jnum(o, key, &d) ? d : dflt;
}

static bool jtrue(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(jget(o, key));
}

static const cJSON *jarr(const cJSON *o, const char *key)
{
    const cJSON *v = jget(o, key);
    return cJSON_IsArray(v) ? v : NULL;
}

/* ---- UTF-8 and widths ------------------------------------------------------ */

/* Decodes one UTF-8 sequence; returns its length, with *cp = 0xFFFD for an
 * invalid, overlong or truncated one (length 1 then). */
static int utf8_decode(const unsigned char *p, uint32_t *cp)
{
    unsigned c = p[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = v;
    return n;
}

static int cp_width(uint32_t cp)
{
    if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) ||
        (cp >= 0x3041 && cp <= 0x33FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
        (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
        (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
        (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
        (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x20000 && cp <= 0x3FFFD))
        return 2;
    return 1;
}

/* The next glyph of *p as it will be shown: its bytes in enc (elen), its
 * width as the return value, 0 at the end of the string.  Control
 * characters, broken UTF-8, combining marks and symbols whose width
 * terminals and C libraries disagree on (emoji, and the symbol blocks where
 * many of them live; our own ✗ excepted) become '?'; so does anything
 * outside ASCII when the terminal is not UTF-8. */
static int next_glyph(const unsigned char **p, bool utf8, char enc[4], int *elen)
{
    if (!**p)
        return 0;
    uint32_t cp;
    int n = utf8_decode(*p, &cp);
    bool bad = cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0xFFFD ||
               (cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x200B && cp <= 0x200F) ||
               (cp >= 0x2028 && cp <= 0x202E) || cp >= 0x1F000 || (cp >= 0x80 && !utf8) ||
               (cp >= 0x2300 && cp <= 0x23FF) || (cp >= 0x2B00 && cp <= 0x2BFF) ||
               (cp >= 0x2600 && cp <= 0x27BF && cp != 0x2717);
    if (cp == '\t')
        bad = false, cp = ' ';
    if (bad) {
        enc[0] = '?';
        *elen = 1;
        *p += n;
        return 1;
    }
    if (cp == ' ') {
        enc[0] = ' ';
        *elen = 1;
    } else {
        memcpy(enc, *p, (size_t)n);
        *elen = n;
    }
    *p += n;
    return cp_width(cp);
}

static int text_width(const char *s, bool utf8)
{
    const unsigned char *p = (const unsigned char *)s;
    char enc[4];
    int elen, w, total = 0;
    while ((w = next_glyph(&p, utf8, enc, &elen)) > 0)
        total += w;
    return total;
}

int dv_str_width(const char *s)
{
    return s ? text_width(s, true) : 0;
}

/* ---- line building ------------------------------------------------------- */

static void line_reset(struct dv_line *l, int max, enum dv_style bg)
{
    l->text[0] = '\0';
    l->len = 0;
    l->cols = 0;
    l->max = max;
    l->n_spans = 0;
    l->bg = bg;
}

static void line_span(struct dv_line *l, size_t start, enum dv_style st)
{
    size_t len = l->len - start;
    if (len == 0)
        return;
    if (l->n_spans > 0) {
        struct dv_span *last = &l->spans[l->n_spans - 1];
        if (last->off + last->len == start && (last->style == st || l->n_spans == DV_MAX_SPANS)) {
            last->len += len;
            return;
        }
    }
    l->spans[l->n_spans++] = (struct dv_span){.off = start, .len = len, .style = st};
}

/* Appends at most maxcols columns of *sp (< 0: as many as fit) and moves
 * *sp past what was appended; returns the columns used. */
static int put_some(struct dv_line *l, bool utf8, enum dv_style st, const char **sp, int maxcols)
{
    int room = l->max - l->cols;
    if (maxcols < 0 || maxcols > room)
        maxcols = room;
    if (!*sp || maxcols <= 0)
        return 0;
    size_t start = l->len;
    const unsigned char *p = (const unsigned char *)*sp;
    int used = 0, w, elen;
    char enc[4];
    for (;;) {
        const unsigned char *before = p;
        w = next_glyph(&p, utf8, enc, &elen);
        if (w <= 0 || used + w > maxcols || l->len + (size_t)elen >= sizeof l->text) {
            p = before;
            break;
        }
        memcpy(l->text + l->len, enc, (size_t)elen);
        l->len += (size_t)elen;
        used += w;
    }
    *sp = (const char *)p;
    l->text[l->len] = '\0';
    l->cols += used;
    line_span(l, start, st);
    return used;
}

static int put_n(struct dv_line *l, bool utf8, enum dv_style st, const char *s, int maxcols)
{
    return put_some(l, utf8, st, &s, maxcols);
}

struct ctx {
    struct dv_screen *s;
    const struct dv_view *v;
    const cJSON *st;
    uint64_t now;
    bool utf8;
    struct dv_line *l; /* the row being filled */
};

static void put(struct ctx *c, enum dv_style st, const char *s)
{
    put_n(c->l, c->utf8, st, s, -1);
}

static void putf(struct ctx *c, enum dv_style st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void putf(struct ctx *c, enum dv_style st, const char *fmt, ...)
{
    char buf[DV_LINE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    put(c, st, buf);
}

/* Spaces up to column col. */
static void pad_to(struct ctx *c, int col)
{
    static const char spaces[] = "                                                                ";
    while (c->l->cols < col && c->l->cols < c->l->max) {
        int n = col - c->l->cols;
        if (n > (int)sizeof spaces - 1)
            n = (int)sizeof spaces - 1;
        if (put_n(c->l, false, DV_PLAIN, spaces, n) == 0)
            break;
    }
}

/* s in exactly width columns: padded, or cut with an ellipsis. */
static void put_fixed(struct ctx *c, enum dv_style st, const char *s, int width, bool right)
{
    if (width <= 0)
        return;
    int start = c->l->cols;
    int w = text_width(s ? s : "", c->utf8);
    if (w <= width) {
        if (right)
            pad_to(c, start + width - w);
        put_n(c->l, c->utf8, st, s ? s : "", width);
    } else {
        put_n(c->l, c->utf8, st, s, width - 1);
        put_n(c->l, c->utf8, st, c->utf8 ? "…" : "~", 1);
    }
    pad_to(c, start + width);
}

static struct dv_line *row(struct ctx *c, int r, enum dv_style bg)
{
    c->l = &c->s->lines[r];
    line_reset(c->l, c->s->cols, bg);
    return c->l;
}

/* ---- formatting ------------------------------------------------------------ */

char *dv_fmt_duration(char *out, size_t outsz, double s)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    if (s < 10)
        snprintf(out, outsz, "%.1fs", (double)(long long)(s * 10) / 10); /* s >= 0: floor */
    else if (s < 60)
        snprintf(out, outsz, "%.0fs", (double)(long long)s);
    else if (s < 3600)
        snprintf(out, outsz, "%dm%02ds", (int)(s / 60), (int)((long long)s % 60));
    else if (s < 86400)
        snprintf(out, outsz, "%dh%02dm", (int)(s / 3600), (int)((long long)(s / 60) % 60));
    else if (s < 1e9)
        snprintf(out, outsz, "%dd%02dh", (int)(s / 86400), (int)((long long)(s / 3600) % 24));
    else
        snprintf(out, outsz, "long");
    return out;
}

char *dv_fmt_bytes(char *out, size_t outsz, double b)
{
    if (!isfinite(b) || b < 0)
        b = 0;
    if (b < 1024)
        snprintf(out, outsz, "%.0fB", b);
    else if (b < 1024.0 * 1024)
        snprintf(out, outsz, "%.1fK", b / 1024);
    else if (b < 1024.0 * 1024 * 1024)
        snprintf(out, outsz, "%.1fM", b / (1024.0 * 1024));
    else if (b < 1e18)
        snprintf(out, outsz, "%.1fG", b / (1024.0 * 1024 * 1024));
    else
        snprintf(out, outsz, "huge");
    return out;
}

char *dv_fmt_count(char *out, size_t outsz, double n)
{
    if (!isfinite(n) || n < 0)
        n = 0;
    if (n < 1000)
        snprintf(out, outsz, "%.0f", n);
    else if (n < 1e6)
        snprintf(out, outsz, "%.1fk", n / 1e3);
    else if (n < 1e9)
        snprintf(out, outsz, "%.1fM", n / 1e6);
    else if (n < 1e18)
        snprintf(out, outsz, "%.1fG", n / 1e9);
    else
        snprintf(out, outsz, "huge");
    return out;
}

static char *fmt_latency(char *out, size_t outsz, double ms)
{
    if (!isfinite(ms) || ms < 0)
        snprintf(out, outsz, "-");
    else if (ms < 1000)
        snprintf(out, outsz, "%.0fms", ms);
    else if (ms < 10000)
        snprintf(out, outsz, "%.2fs", ms / 1000);
    else if (ms < 1e9)
        snprintf(out, outsz, "%.1fs", ms / 1000);
    else
        snprintf(out, outsz, "long");
    return out;
}

char *dv_sparkline(char *out, size_t outsz, const double *ms, size_t n, int width, bool utf8)
{
    static const char *const blocks[8] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    static const char ascii[8] = {'_', '.', ',', '-', '=', '+', '*', '#'};
    size_t len = 0;
    if (outsz == 0)
        return out;
    out[0] = '\0';
    if (width <= 0)
        return out;
    if (!ms)
        n = 0;
    size_t take = n < (size_t)width ? n : (size_t)width;
    const double *v = take ? ms + (n - take) : ms;
    double max = 0;
    for (size_t i = 0; i < take; i++)
        if (isfinite(v[i]) && v[i] > max)
            max = v[i];
    for (int i = 0; i < width - (int)take && len + 1 < outsz; i++)
        out[len++] = ' ';
    for (size_t i = 0; i < take; i++) {
        const char *g;
        char one[2] = {0, 0};
        if (!isfinite(v[i]) || v[i] < 0) {
            g = "x";
        } else {
            int lvl = max > 0 ? (int)(v[i] / max * 7 + 0.5) : 0;
            if (lvl < 0)
                lvl = 0;
            if (lvl > 7)
                lvl = 7;
            if (utf8) {
                g = blocks[lvl];
            } else {
                one[0] = ascii[lvl];
                g = one;
            }
        }
        size_t gl = strlen(g);
        if (len + gl + 1 > outsz)
            break;
        memcpy(out + len, g, gl);
        len += gl;
    }
    out[len] = '\0';
    return out;
}

/* ---- the endpoint list ---------------------------------------------------- */

static const char *current_group(const cJSON *st)
{
    return jstr(st, "current_group");
}

static bool ep_listed(const cJSON *st, const struct dv_view *v, const cJSON *ep)
{
    if (!cJSON_IsObject(ep))
        return false;
    if (v->all_groups)
        return true;
    const char *g = jstr(ep, "group");
    const char *cg = current_group(st);
    return !cg || !g || strcmp(g, cg) == 0;
}

static const cJSON *endpoint_at(const cJSON *st, const struct dv_view *v, int idx)
{
    const cJSON *eps = jarr(st, "endpoints");
    const cJSON *ep;
    int i = 0;
    if (idx < 0)
        return NULL;
    cJSON_ArrayForEach(ep, eps)
    {
        if (!ep_listed(st, v, ep))
            continue;
        if (i++ == idx)
            return ep;
    }
    return NULL;
}

int dv_endpoint_count(const cJSON *st, const struct dv_view *v)
{
    const cJSON *eps = jarr(st, "endpoints");
    const cJSON *ep;
    int n = 0;
    cJSON_ArrayForEach(ep, eps)
    {
        if (ep_listed(st, v, ep))
            n++;
    }
    return n;
}

const char *dv_endpoint_name(const cJSON *st, const struct dv_view *v, int idx)
{
    return jstr(endpoint_at(st, v, idx), "name");
}

static int endpoint_index(const cJSON *st, const struct dv_view *v, const char *name)
{
    int n = dv_endpoint_count(st, v);
    for (int i = 0; name && i < n; i++) {
        const char *e = dv_endpoint_name(st, v, i);
        if (e && strcmp(e, name) == 0)
            return i;
    }
    return -1;
}

static int clamp_cursor(const cJSON *st, const struct dv_view *v, int cursor)
{
    int n = dv_endpoint_count(st, v);
    if (cursor >= n)
        cursor = n - 1;
    if (cursor < 0)
        cursor = 0;
    return cursor;
}

/* ---- view ------------------------------------------------------------------- */

void dv_view_init(struct dv_view *v, enum dv_lang lang, bool utf8)
{
    memset(v, 0, sizeof *v);
    v->lang = lang;
    v->utf8 = utf8;
    v->cursor = -1;
}

void dv_view_observe(struct dv_view *v, const cJSON *status, uint64_t now_ms)
{
    if (!cJSON_IsObject(status))
        return;
    bool running = jtrue(jget(status, "checks"), "running");
    if (running && !v->was_running)
        v->check_started_ms = now_ms;
    v->was_running = running;
    /* The cursor starts on the current endpoint. */
    if (v->cursor < 0) {
        const char *cur = jstr(jget(status, "current_endpoint"), "name");
        int i = endpoint_index(status, v, cur);
        v->cursor = i >= 0 ? i : 0;
    }
}

void dv_screen_init(struct dv_screen *s, int rows, int cols)
{
    if (rows < 1)
        rows = 1;
    if (cols < 1)
        cols = 1;
    if (cols > DV_MAX_COLS)
        cols = DV_MAX_COLS;
    s->rows = rows;
    s->cols = cols;
    s->lines = xcalloc((size_t)rows, sizeof *s->lines);
    for (int r = 0; r < rows; r++)
        line_reset(&s->lines[r], cols, DV_PLAIN);
}

void dv_screen_release(struct dv_screen *s)
{
    free(s->lines);
    s->lines = NULL;
    s->rows = s->cols = 0;
}

/* ---- sections ---------------------------------------------------------------- */

static const char *sep(const struct ctx *c)
{
    return c->utf8 ? " │ " : " | ";
}

/*
 * The three top rows are bars of items separated by " | ".  Each item has
 * a priority; when the row is too narrow, whole items are dropped, the
 * least important first, so that a number is never cut in the middle
 * ("requests 34" must not become "requests 3").  Only an item that is
 * alone on the row may still be cut (with an ellipsis).
 */
#define BAR_ITEMS 12
#define BAR_PARTS 4

struct bar_part {
    enum dv_style st;
    char text[192];
};

struct bar_item {
    int prio; /* 0 is the most important */
    int n;
    struct bar_part part[BAR_PARTS];
};

struct bar {
    int n;
    struct bar_item it[BAR_ITEMS];
};

static struct bar_item *bar_add(struct bar *b, int prio)
{
    if (b->n == BAR_ITEMS)
        return NULL;
    struct bar_item *it = &b->it[b->n++];
    it->prio = prio;
    it->n = 0;
    return it;
}

static void item_put(struct bar_item *it, enum dv_style st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void item_put(struct bar_item *it, enum dv_style st, const char *fmt, ...)
{
    if (!it || it->n == BAR_PARTS)
        return;
    struct bar_part *p = &it->part[it->n++];
    p->st = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text, sizeof p->text, fmt, ap);
    va_end(ap);
}

static int item_width(const struct bar_item *it, bool utf8)
{
    int w = 0;
    for (int i = 0; i < it->n; i++)
        w += text_width(it->part[i].text, utf8);
    return w;
}

/* Fills row r with the items that fit, in their order, after lead. */
static void bar_render(struct ctx *c, int r, enum dv_style bg, const char *lead, struct bar *b)
{
    bool keep[BAR_ITEMS] = {false};
    int width = text_width(lead, c->utf8), kept = 0;
    int sepw = text_width(sep(c), c->utf8);
    for (int i = 0; i < b->n; i++) {
        keep[i] = true;
        width += item_width(&b->it[i], c->utf8) + (kept++ ? sepw : 0);
    }
    while (width > c->s->cols && kept > 1) {
        int drop = -1;
        for (int i = 0; i < b->n; i++)
            if (keep[i] && (drop < 0 || b->it[i].prio >= b->it[drop].prio))
                drop = i;
        if (drop < 0)
            break;
        keep[drop] = false;
        width -= item_width(&b->it[drop], c->utf8) + sepw;
        kept--;
    }
    row(c, r, bg);
    put(c, bg, lead);
    bool first = true;
    for (int i = 0; i < b->n; i++) {
        if (!keep[i])
            continue;
        if (!first)
            put(c, bg == DV_PLAIN ? DV_PLAIN : bg, sep(c));
        first = false;
        for (int k = 0; k < b->it[i].n; k++)
            put(c, b->it[i].part[k].st, b->it[i].part[k].text);
    }
}

/* A whole number as it is (the tests compare it with /status), or in
 * short form once it is too long to read at a glance. */
static char *fmt_int(char *out, size_t outsz, double n)
{
    if (isfinite(n) && n >= 0 && n < 1e7)
        snprintf(out, outsz, "%.0f", n);
    else
        dv_fmt_count(out, outsz, n);
    return out;
}

/* Seconds for prose: "4.8 s", "12 s". */
static char *fmt_secs(char *out, size_t outsz, double s)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    if (s < 10)
        snprintf(out, outsz, "%.1f s", (double)(long long)(s * 10) / 10); /* s >= 0: floor */
    else if (s < 1e9)
        snprintf(out, outsz, "%.0f s", (double)(long long)s);
    else
        snprintf(out, outsz, "long");
    return out;
}

static void render_title(struct ctx *c)
{
    char b[64];
    const cJSON *st = c->st;
    const struct dv_view *v = c->v;
    struct bar bar = {0};
    struct bar_item *it = bar_add(&bar, 0);
    item_put(it, DV_TITLE, "claude-zephyr");
    if (jstr(st, "version"))
        item_put(it, DV_TITLE, " %s", jstr(st, "version"));
    if (v->remote) {
        /* Which proxy this is matters more than its counters. */
        item_put(bar_add(&bar, st ? 1 : 0), DV_TITLE, "%s %s", tr(v, T_REMOTE), v->remote);
        if (st && jstr(st, "listen"))
            item_put(bar_add(&bar, 5), DV_TITLE, "(%s)", jstr(st, "listen"));
    } else if (jstr(st, "listen")) {
        item_put(bar_add(&bar, 4), DV_TITLE, "http://%s", jstr(st, "listen"));
    }
    if (st) {
        item_put(bar_add(&bar, 3), DV_TITLE, "%s %s", tr(v, T_UP),
                 dv_fmt_duration(b, sizeof b, jnum_or(st, "uptime_s", 0)));
        item_put(bar_add(&bar, 2), DV_TITLE, "%s %s", tr(v, T_ACTIVE),
                 fmt_int(b, sizeof b, jnum_or(st, "active_connections", 0)));
        item_put(bar_add(&bar, 1), DV_TITLE, "%s %s", tr(v, T_REQUESTS),
                 fmt_int(b, sizeof b, jnum_or(st, "requests_total", 0)));
    }
    bar_render(c, 0, DV_TITLE, " ", &bar);
}

/* The current group's object in "groups", or NULL. */
static const cJSON *current_group_obj(const cJSON *st)
{
    const char *cg = jstr(st, "current_group");
    const cJSON *g;
    cJSON_ArrayForEach(g, jarr(st, "groups"))
    {
        const char *n = jstr(g, "name");
        if (n && cg && strcmp(n, cg) == 0)
            return g;
    }
    return NULL;
}

static void render_mode_line(struct ctx *c)
{
    const struct dv_view *v = c->v;
    const cJSON *st = c->st;
    char b[64];
    struct bar bar = {0};
    bool manual = jstr(st, "mode") && strcmp(jstr(st, "mode"), "manual") == 0;
    struct bar_item *it = bar_add(&bar, 0);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_MODE));
    item_put(it, manual ? DV_WARN : DV_GOOD, "%s", tr(v, manual ? T_MANUAL : T_AUTO));
    /* Panic routing is the one state that explains every other number. */
    if (jtrue(current_group_obj(st), "panic"))
        item_put(bar_add(&bar, 0), DV_BAD, "%s", tr(v, T_PANIC));
    /* Traffic served by a fallback group (another account) while the
     * current group cannot take it. */
    const cJSON *fb = jget(st, "fallback");
    if (jtrue(fb, "active") && jstr(fb, "group"))
        item_put(bar_add(&bar, 0), DV_WARN, "%s %s", tr(v, T_FALLBACK), jstr(fb, "group"));
    it = bar_add(&bar, 2);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_GROUP));
    const char *g = current_group(st);
    item_put(it, DV_STRONG, "%s", g ? g : "-");
    int ng = cJSON_GetArraySize(jarr(st, "groups"));
    if (ng > 1)
        item_put(it, DV_DIM, " (%d)", ng);
    it = bar_add(&bar, 0);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_CURRENT));
    const char *cur = jstr(jget(st, "current_endpoint"), "name");
    item_put(it, cur ? DV_STRONG : DV_BAD, "%s", cur ? cur : tr(v, T_NONE));
    const char *pin = jstr(st, "pinned_endpoint");
    if (manual && pin) {
        if (jtrue(st, "pin_overridden"))
            item_put(it, DV_BAD, " (%s %s %s)", tr(v, T_PINNED), pin, tr(v, T_PIN_DOWN));
        else if (cur && strcmp(pin, cur) == 0)
            item_put(it, DV_PLAIN, " (%s)", tr(v, T_PINNED));
        else
            item_put(it, DV_PLAIN, " (%s %s)", tr(v, T_PINNED), pin);
    }
    const cJSON *ps = jget(st, "pending_switch");
    const char *to = jstr(ps, "to");
    if (to)
        item_put(bar_add(&bar, 1), DV_WARN, "%s %s (%s, %s)", tr(v, T_SWITCHING), to,
                 jstr(ps, "reason") ? jstr(ps, "reason") : "",
                 dv_fmt_duration(b, sizeof b, jnum_or(ps, "waiting_ms", 0) / 1000.0));
    /* Why the current endpoint is not always the one with the lowest
     * number: switching compares smoothed latencies against this margin. */
    double thr;
    if (!manual && jnum(jget(st, "config"), "switch_threshold_ms", &thr) && thr >= 0 && thr < 1e9)
        item_put(bar_add(&bar, 5), DV_DIM, "%s %.0f ms", tr(v, T_SWITCH_AT), thr);
    bar_render(c, 1, DV_PLAIN, " ", &bar);
}

static const char *load_text(const struct dv_view *v, const char *level)
{
    if (!level)
        return "-";
    if (strcmp(level, "idle") == 0)
        return tr(v, T_LOAD_IDLE);
    if (strcmp(level, "light") == 0)
        return tr(v, T_LOAD_LIGHT);
    if (strcmp(level, "busy") == 0)
        return tr(v, T_LOAD_BUSY);
    return level;
}

static const char *method_text(const struct dv_view *v, const char *m)
{
    if (strcmp(m, "messages") == 0)
        return tr(v, T_M_MESSAGES);
    if (strcmp(m, "count_tokens") == 0)
        return tr(v, T_M_COUNT_TOKENS);
    if (strcmp(m, "cli") == 0)
        return tr(v, T_M_CLI);
    return m;
}

static void render_load_line(struct ctx *c)
{
    const struct dv_view *v = c->v;
    const cJSON *st = c->st;
    const cJSON *ch = jget(st, "checks");
    char b[64], b2[64];
    double next;
    struct bar bar = {0};
    struct bar_item *it = bar_add(&bar, 0);
    if (jtrue(ch, "running")) {
        double timeout = jnum_or(jget(jget(st, "config"), "health_check"), "timeout_seconds", 0);
        item_put(it, DV_WARN, "%s", tr(v, T_CHECKING));
        if (timeout > 0 && c->now >= v->check_started_ms) {
            double left = timeout - (double)(c->now - v->check_started_ms) / 1000.0;
            if (v->lang == DV_LANG_ZH)
                item_put(it, DV_WARN, "：%s%s", fmt_secs(b, sizeof b, left),
                         tr(v, T_UNTIL_TIMEOUT));
            else
                item_put(it, DV_WARN, ": %s %s", fmt_secs(b, sizeof b, left),
                         tr(v, T_UNTIL_TIMEOUT));
        }
    } else {
        item_put(it, DV_HEAD, "%s: ", tr(v, T_NEXT_CHECK));
        if (jtrue(ch, "paused"))
            item_put(it, DV_WARN, "%s", tr(v, T_PAUSED));
        else if (jnum(ch, "next_check_in_s", &next))
            item_put(it, DV_PLAIN, "%s", dv_fmt_duration(b, sizeof b, next));
        else
            item_put(it, DV_DIM, "-");
    }
    it = bar_add(&bar, 2);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_LOAD));
    item_put(it, DV_PLAIN, "%s", load_text(v, jstr(ch, "load_level")));
    it = bar_add(&bar, 3);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_INTERVAL));
    item_put(it, DV_PLAIN, "%s", dv_fmt_duration(b, sizeof b, jnum_or(ch, "interval_s", 0)));
    if (jtrue(ch, "dynamic_scaling"))
        item_put(it, DV_DIM, " %s", tr(v, T_DYNAMIC));
    const cJSON *tok = jget(ch, "tokens_used");
    it = bar_add(&bar, 5);
    item_put(it, DV_HEAD, "%s: ", tr(v, T_CHECK_TOKENS));
    item_put(it, DV_PLAIN, "%s %s / %s %s", dv_fmt_count(b, sizeof b, jnum_or(tok, "input", 0)),
             tr(v, T_IN), dv_fmt_count(b2, sizeof b2, jnum_or(tok, "output", 0)), tr(v, T_OUT));
    const cJSON *tt = jget(st, "traffic_tokens");
    if (tt) {
        it = bar_add(&bar, 6);
        item_put(it, DV_HEAD, "%s: ", tr(v, T_TRAFFIC));
        item_put(it, DV_PLAIN, "%s %s / %s %s", dv_fmt_count(b, sizeof b, jnum_or(tt, "input", 0)),
                 tr(v, T_IN), dv_fmt_count(b2, sizeof b2, jnum_or(tt, "output", 0)), tr(v, T_OUT));
    }
    double retries;
    if (jnum(st, "retries_total", &retries))
        item_put(bar_add(&bar, 4), DV_PLAIN, "%s %s", tr(v, T_RETRIES),
                 fmt_int(b, sizeof b, retries));
    if (jstr(ch, "method")) {
        it = bar_add(&bar, 4);
        item_put(it, DV_HEAD, "%s: ", tr(v, T_METHOD));
        item_put(it, DV_DIM, "%s", method_text(v, jstr(ch, "method")));
    }
    const cJSON *fleet = jget(st, "cluster"); /* [cluster]: is state shared right now? */
    if (fleet) {
        it = bar_add(&bar, 1);
        item_put(it, DV_HEAD, "fleet: ");
        item_put(it, jtrue(fleet, "shared") ? DV_PLAIN : DV_WARN, "%s",
                 jtrue(fleet, "shared") ? "Redis" : "Redis down, local state");
    }
    bar_render(c, 2, DV_PLAIN, " ", &bar);
}

/*
 * The endpoint table.  Every cell is formatted first, so that a column is
 * as wide as its widest cell or its header (display width, so Chinese
 * headers are never cut), and numbers are never cut: a column that does
 * not fit is left out instead.  The layout, by priority:
 *   - the name keeps up to EP_NAME_KEEP cells while columns are placed;
 *   - the columns but the history are placed in the order of ep_prio
 *     while they fit (the last error only when there is one, the session
 *     count only when an endpoint listed holds a session);
 *   - what is left widens the name to its full width, then holds the
 *     history (at least EP_HIST_MIN cells, at most the samples there
 *     are), then widens the last error;
 *   - a name is cut only when even the status does not fit beside it, in
 *     the middle ("relay-…-east"), so that names that share a prefix stay
 *     apart.
 * The history is the first to shrink and to go: its width is whatever
 * the more important columns leave.
 */
enum ep_col {
    EC_STATUS = 0,
    EC_SMOOTH,
    EC_LAST,
    EC_HIST,
    EC_OK,
    EC_CIRC,
    EC_NOW,
    EC_SESS,
    EC_REQS,
    EC_FAIL,
    EC_ERR,
    EC_N
};

/* Placement order: most important first. */
static const enum ep_col ep_prio[EC_N] = {
    EC_STATUS, EC_SMOOTH, EC_REQS, EC_FAIL, EC_ERR,  EC_CIRC,
    EC_OK,     EC_NOW,    EC_SESS, EC_LAST, EC_HIST,
};

enum {
    EP_LEAD = 5,
    EP_NAME_KEEP = 24,
    EP_NAME_MIN = 6,
    EP_HIST_MIN = 8,
    EP_ERR_MIN = 12,
    EP_HIST_MAX = 64
};

struct ep_cols {
    int name;    /* width of the name column */
    int w[EC_N]; /* width of each column; 0 when left out */
};

struct ep_cell {
    char text[256];
    enum dv_style st;
};

static bool col_right(enum ep_col k)
{
    return k == EC_SMOOTH || k == EC_LAST || k == EC_OK || k == EC_NOW || k == EC_SESS ||
           k == EC_REQS || k == EC_FAIL;
}

static enum dv_text col_header(enum ep_col k)
{
    static const enum dv_text h[EC_N] = {
        [EC_STATUS] = T_COL_STATUS, [EC_SMOOTH] = T_COL_SMOOTHED, [EC_LAST] = T_COL_LAST,
        [EC_HIST] = T_COL_HISTORY,  [EC_OK] = T_COL_OK,           [EC_CIRC] = T_COL_CIRCUIT,
        [EC_NOW] = T_COL_NOW,       [EC_SESS] = T_COL_SESS,       [EC_REQS] = T_COL_REQS,
        [EC_FAIL] = T_COL_FAIL,     [EC_ERR] = T_COL_ERROR,
    };
    return h[k];
}

/* The name as listed: "group/name" when every group is shown. */
static void ep_display_name(const struct dv_view *v, const cJSON *ep, char *out, size_t outsz)
{
    const char *n = jstr(ep, "name") ? jstr(ep, "name") : "?";
    if (v->all_groups && jstr(ep, "group"))
        snprintf(out, outsz, "%s/%s", jstr(ep, "group"), n);
    else
        snprintf(out, outsz, "%s", n);
}

static enum dv_text ep_status_label(const char *status, bool available, enum dv_style *sst,
                                    const char **mark, bool utf8)
{
    *sst = DV_DIM;
    *mark = utf8 ? "·" : "?";
    if (strcmp(status, "healthy") == 0) {
        *sst = available ? DV_GOOD : DV_WARN, *mark = utf8 ? "●" : "+";
        return T_HEALTHY;
    }
    if (strcmp(status, "failed") == 0) {
        *sst = DV_BAD, *mark = utf8 ? "✗" : "x";
        return T_FAILED;
    }
    if (strcmp(status, "checking") == 0) {
        *sst = DV_WARN, *mark = utf8 ? "◌" : "~";
        return T_EP_CHECKING;
    }
    if (strcmp(status, "auth_failed") == 0) {
        *sst = DV_BAD, *mark = "!";
        return T_AUTH_FAILED;
    }
    if (strcmp(status, "check_error") == 0) {
        /* The check is misconfigured, not the endpoint: live traffic decides. */
        *sst = DV_WARN, *mark = "?";
        return T_CHECK_ERROR;
    }
    return T_UNKNOWN;
}

/* Every cell of one endpoint's row but the history. */
static void ep_cells(const struct ctx *c, const cJSON *ep, struct ep_cell cell[EC_N])
{
    const struct dv_view *v = c->v;
    char d[64];
    const char *mark;
    for (int k = 0; k < EC_N; k++) {
        cell[k].text[0] = '\0';
        cell[k].st = DV_PLAIN;
    }
    const char *status = jstr(ep, "status") ? jstr(ep, "status") : "unknown";
    enum dv_text label =
        ep_status_label(status, jtrue(ep, "available"), &cell[EC_STATUS].st, &mark, c->utf8);
    snprintf(cell[EC_STATUS].text, sizeof cell[EC_STATUS].text, "%s", tr(v, label));
    fmt_latency(cell[EC_SMOOTH].text, sizeof cell[EC_SMOOTH].text,
                jnum_or(ep, "smoothed_latency_ms", -1));
    fmt_latency(cell[EC_LAST].text, sizeof cell[EC_LAST].text, jnum_or(ep, "latency_ms", -1));
    cell[EC_LAST].st = DV_DIM;
    double rate;
    if (jnum(ep, "success_rate", &rate) && rate >= 0 && rate <= 1) {
        snprintf(cell[EC_OK].text, sizeof cell[EC_OK].text, "%.0f%%", rate * 100);
        cell[EC_OK].st = rate >= 0.99 ? DV_PLAIN : rate >= 0.8 ? DV_WARN : DV_BAD;
    } else {
        snprintf(cell[EC_OK].text, sizeof cell[EC_OK].text, "-");
        cell[EC_OK].st = DV_DIM;
    }
    const char *circ = jstr(ep, "circuit") ? jstr(ep, "circuit") : "closed";
    double secs;
    char *ct = cell[EC_CIRC].text;
    size_t csz = sizeof cell[EC_CIRC].text;
    if (strcmp(circ, "open") == 0) {
        if (jnum(ep, "circuit_retry_in_s", &secs))
            snprintf(ct, csz, "%s %s", tr(v, T_OPEN), dv_fmt_duration(d, sizeof d, secs));
        else
            snprintf(ct, csz, "%s", tr(v, T_OPEN));
        cell[EC_CIRC].st = DV_BAD;
    } else if (jnum(ep, "rate_limited_for_s", &secs)) {
        snprintf(ct, csz, "%s %s", tr(v, T_REST), dv_fmt_duration(d, sizeof d, secs));
        cell[EC_CIRC].st = DV_WARN;
    } else if (strcmp(circ, "half_open") == 0) {
        snprintf(ct, csz, "%s", tr(v, T_HALF_OPEN));
        cell[EC_CIRC].st = DV_WARN;
    } else {
        snprintf(ct, csz, "%s", tr(v, T_CLOSED));
        cell[EC_CIRC].st = DV_DIM;
    }
    double act = jnum_or(ep, "active_connections", 0);
    fmt_int(cell[EC_NOW].text, sizeof cell[EC_NOW].text, act);
    cell[EC_NOW].st = act > 0 ? DV_STRONG : DV_DIM;
    /* Sessions bound here: why traffic may stay on an endpoint that is not
     * current. */
    double sess = jnum_or(ep, "sessions", 0);
    fmt_int(cell[EC_SESS].text, sizeof cell[EC_SESS].text, sess);
    cell[EC_SESS].st = sess > 0 ? DV_STRONG : DV_DIM;
    fmt_int(cell[EC_REQS].text, sizeof cell[EC_REQS].text, jnum_or(ep, "requests", 0));
    double f = jnum_or(ep, "failures", 0);
    fmt_int(cell[EC_FAIL].text, sizeof cell[EC_FAIL].text, f);
    cell[EC_FAIL].st = f > 0 ? DV_WARN : DV_DIM;
    if (jstr(ep, "error")) {
        snprintf(cell[EC_ERR].text, sizeof cell[EC_ERR].text, "%s", jstr(ep, "error"));
        cell[EC_ERR].st = DV_BAD;
    } else if (jstr(ep, "check_error")) {
        snprintf(cell[EC_ERR].text, sizeof cell[EC_ERR].text, "%s", jstr(ep, "check_error"));
        cell[EC_ERR].st = DV_WARN;
    }
}

static int ep_history_len(const cJSON *ep)
{
    int n = cJSON_GetArraySize(jarr(ep, "history"));
    return n > EP_HIST_MAX ? EP_HIST_MAX : n;
}

/* The widths for the rows first..first+n-1 of the list, on this screen. */
static struct ep_cols ep_layout(const struct ctx *c, int first, int n, int label_want)
{
    const struct dv_view *v = c->v;
    struct ep_cols w;
    int want[EC_N];
    int name_want = text_width(tr(v, T_COL_ENDPOINT), c->utf8);
    memset(&w, 0, sizeof w);
    for (int k = 0; k < EC_N; k++)
        want[k] = text_width(tr(v, col_header((enum ep_col)k)), c->utf8);
    int hist = 0;
    bool any_error = false, any_session = false;
    for (int i = first; i < first + n; i++) {
        const cJSON *ep = endpoint_at(c->st, v, i);
        struct ep_cell cell[EC_N];
        char name[160];
        ep_display_name(v, ep, name, sizeof name);
        int nw = text_width(name, c->utf8);
        if (nw > name_want)
            name_want = nw;
        ep_cells(c, ep, cell);
        for (int k = 0; k < EC_N; k++) {
            if (k == EC_HIST || k == EC_ERR)
                continue;
            int cw = text_width(cell[k].text, c->utf8);
            if (cw > want[k])
                want[k] = cw;
        }
        if (cell[EC_ERR].text[0])
            any_error = true;
        if (jnum_or(ep, "sessions", 0) > 0)
            any_session = true;
        if (ep_history_len(ep) > hist)
            hist = ep_history_len(ep);
    }
    int err_full = want[EC_ERR];
    for (int i = first; any_error && i < first + n; i++) {
        struct ep_cell cell[EC_N];
        ep_cells(c, endpoint_at(c->st, v, i), cell);
        int cw = text_width(cell[EC_ERR].text, c->utf8);
        if (cw > err_full)
            err_full = cw;
    }
    if (want[EC_HIST] < EP_HIST_MIN)
        want[EC_HIST] = EP_HIST_MIN;
    if (want[EC_ERR] < EP_ERR_MIN)
        want[EC_ERR] = EP_ERR_MIN;

    int cols = c->s->cols;
    w.name = name_want < EP_NAME_KEEP ? name_want : EP_NAME_KEEP;
    /* Lead, name and status always; the name gives way if need be. */
    int used = EP_LEAD + w.name + 1 + want[EC_STATUS] + 1;
    if (used > cols) {
        w.name -= used - cols;
        if (w.name < EP_NAME_MIN)
            w.name = EP_NAME_MIN;
        used = EP_LEAD + w.name + 1 + want[EC_STATUS] + 1;
    }
    w.w[EC_STATUS] = want[EC_STATUS];
    for (int p = 1; p < EC_N; p++) {
        enum ep_col k = ep_prio[p];
        if ((k == EC_ERR && !any_error) || (k == EC_SESS && !any_session) || k == EC_HIST)
            continue;
        if (used + want[k] + 1 <= cols) {
            w.w[k] = want[k];
            used += want[k] + 1;
        }
    }
    /* What is left: the name, the history, the error. */
    int left = cols - used;
    if (left > 0 && name_want > w.name) {
        int add = name_want - w.name < left ? name_want - w.name : left;
        w.name += add;
        left -= add;
    }
    if (hist > 0 && left >= want[EC_HIST] + 1) {
        w.w[EC_HIST] = want[EC_HIST];
        left -= want[EC_HIST] + 1;
        if (hist > w.w[EC_HIST]) {
            int add = hist - w.w[EC_HIST] < left ? hist - w.w[EC_HIST] : left;
            w.w[EC_HIST] += add;
            left -= add;
        }
    }
    if (left > 0 && w.w[EC_ERR] && err_full > w.w[EC_ERR]) {
        int add = err_full - w.w[EC_ERR] < left ? err_full - w.w[EC_ERR] : left;
        w.w[EC_ERR] += add;
        left -= add;
    }
    /* Last, room for the group (or the range) beside the header. */
    if (left > 0 && label_want > w.name)
        w.name += label_want - w.name < left ? label_want - w.name : left;
    return w;
}

/* s in exactly width columns, cut in the middle with an ellipsis when it
 * is wider: the end of a name tells endpoints apart as often as its
 * beginning ("relay-tokyo-1", "relay-tokyo-2"). */
static void put_name(struct ctx *c, enum dv_style st, const char *s, int width)
{
    int w = text_width(s, c->utf8);
    if (w <= width || width < 5) {
        put_fixed(c, st, s, width, false);
        return;
    }
    int start = c->l->cols;
    int tail = (width - 1) / 2;
    int head = width - 1 - tail;
    /* Skip glyphs until what remains is at most tail columns wide. */
    const unsigned char *p = (const unsigned char *)s;
    char enc[4];
    int elen, gw, rest = w;
    while (rest > tail && (gw = next_glyph(&p, c->utf8, enc, &elen)) > 0)
        rest -= gw;
    put_n(c->l, c->utf8, st, s, head);
    pad_to(c, start + head);
    put_n(c->l, c->utf8, st, c->utf8 ? "…" : "~", 1);
    pad_to(c, start + width - rest);
    put_n(c->l, c->utf8, st, (const char *)p, rest);
    pad_to(c, start + width);
}

/* The name column's header with the group, or the range shown when the
 * list scrolls. */
static void ep_header_label(const struct ctx *c, int first, int shown, int total, char *label,
                            size_t size)
{
    const struct dv_view *v = c->v;
    const char *head = tr(v, T_COL_ENDPOINT);
    if (shown < total)
        snprintf(label, size, "%s %d-%d/%d", head, first + 1, first + shown, total);
    else if (v->all_groups)
        snprintf(label, size, "%s (%s)", head, tr(v, T_ALL_GROUPS));
    else
        snprintf(label, size, "%s (%s)", head, current_group(c->st) ? current_group(c->st) : "-");
}

static void render_ep_header(struct ctx *c, int r, const struct ep_cols *w, int first, int shown,
                             int total)
{
    const struct dv_view *v = c->v;
    char label[192];
    const char *head = tr(v, T_COL_ENDPOINT);
    row(c, r, DV_PLAIN);
    /* The group (or the range) only when it fits: a header is never cut. */
    ep_header_label(c, first, shown, total, label, sizeof label);
    if (text_width(label, c->utf8) > w->name && shown < total)
        snprintf(label, sizeof label, "%d-%d/%d", first + 1, first + shown, total);
    if (text_width(label, c->utf8) > w->name)
        snprintf(label, sizeof label, "%s", head);
    put(c, DV_HEAD, "     ");
    put_fixed(c, DV_HEAD, label, w->name, false);
    put(c, DV_HEAD, " ");
    for (int k = 0; k < EC_N; k++) {
        if (!w->w[k])
            continue;
        put_fixed(c, DV_HEAD, tr(v, col_header((enum ep_col)k)), w->w[k],
                  col_right((enum ep_col)k));
        put(c, DV_HEAD, " ");
    }
}

static void render_ep_row(struct ctx *c, int r, const struct ep_cols *w, const cJSON *ep,
                          bool under_cursor)
{
    const struct dv_view *v = c->v;
    char name[160];
    struct ep_cell cell[EC_N];
    enum dv_style sst;
    const char *mark;
    row(c, r, under_cursor ? DV_SEL : DV_PLAIN);
    ep_status_label(jstr(ep, "status") ? jstr(ep, "status") : "unknown", jtrue(ep, "available"),
                    &sst, &mark, c->utf8);
    ep_cells(c, ep, cell);
    put(c, DV_STRONG, under_cursor ? ">" : " ");
    put(c, DV_GOOD, jtrue(ep, "current") ? "*" : " ");
    put(c, DV_PLAIN, " ");
    put(c, sst, mark);
    put(c, DV_PLAIN, " ");
    ep_display_name(v, ep, name, sizeof name);
    put_name(c, jtrue(ep, "current") ? DV_STRONG : DV_PLAIN, name, w->name);
    put(c, DV_PLAIN, " ");
    for (int k = 0; k < EC_N; k++) {
        if (!w->w[k])
            continue;
        if (k == EC_HIST) {
            double samples[EP_HIST_MAX];
            size_t ns = 0;
            const cJSON *h;
            const cJSON *hist = jarr(ep, "history");
            int total = cJSON_GetArraySize(hist);
            int skip = total > EP_HIST_MAX ? total - EP_HIST_MAX : 0;
            cJSON_ArrayForEach(h, hist)
            {
                if (skip > 0) {
                    skip--;
                    continue;
                }
                double ms;
                if (!jtrue(h, "ok") || !jnum(h, "latency_ms", &ms))
                    ms = -1;
                samples[ns++] = ms;
            }
            char spark[EP_HIST_MAX * 4 + 1];
            dv_sparkline(spark, sizeof spark, samples, ns, w->w[k], c->utf8);
            put_fixed(c, DV_PLAIN, spark, w->w[k], false);
        } else {
            put_fixed(c, cell[k].st, cell[k].text, w->w[k], col_right((enum ep_col)k));
        }
        put(c, DV_PLAIN, " ");
    }
}

static enum dv_text state_text(const char *s)
{
    if (!s)
        return T_UNKNOWN;
    if (strcmp(s, "reading_body") == 0)
        return T_ST_READING;
    if (strcmp(s, "waiting_headers") == 0)
        return T_ST_WAITING;
    if (strcmp(s, "streaming") == 0)
        return T_ST_STREAMING;
    if (strcmp(s, "done") == 0)
        return T_ST_DONE;
    return T_UNKNOWN;
}

static void render_request_row(struct ctx *c, int r, const cJSON *q, int name_w)
{
    const struct dv_view *v = c->v;
    char b[64], b2[64];
    row(c, r, DV_PLAIN);
    put(c, DV_PLAIN, "  ");
    put_fixed(c, DV_STRONG, jstr(q, "id") ? jstr(q, "id") : "?", 8, false);
    const char *ep = jstr(q, "endpoint");
    put_fixed(c, ep ? DV_PLAIN : DV_DIM, ep ? ep : "-", name_w, false);
    put(c, DV_PLAIN, " ");
    put_fixed(c, DV_PLAIN, dv_fmt_duration(b, sizeof b, jnum_or(q, "age_ms", 0) / 1000.0), 7, true);
    put(c, DV_PLAIN, "  ");
    const char *state = jstr(q, "state");
    enum dv_text stt = state_text(state);
    put_fixed(c, stt == T_ST_STREAMING ? DV_GOOD : DV_PLAIN,
              stt == T_UNKNOWN && state ? state : tr(v, stt), 10, false);
    put(c, DV_PLAIN, " ");
    snprintf(b, sizeof b, "%s %s", tr(v, T_IN),
             dv_fmt_bytes(b2, sizeof b2, jnum_or(q, "bytes_in", 0)));
    put_fixed(c, DV_PLAIN, b, 10, false);
    snprintf(b, sizeof b, "%s %s", tr(v, T_OUT),
             dv_fmt_bytes(b2, sizeof b2, jnum_or(q, "bytes_out", 0)));
    put_fixed(c, DV_PLAIN, b, 11, false);
    double att = jnum_or(q, "attempts", 0);
    if (att > 1)
        putf(c, DV_WARN, "%s %.0f  ", tr(v, T_RETRY), att);
    putf(c, DV_DIM, "%s %s", jstr(q, "method") ? jstr(q, "method") : "",
         jstr(q, "path") ? jstr(q, "path") : "");
}

/* The fixed English phrases of the event messages state.c writes, and
 * their Chinese; the names, numbers and upstream errors in between stay as
 * they are.  A message that matches none is shown as it came. */
static const struct {
    const char *kind;
    const char *en, *zh;
} ev_phrases[] = {
    {"switch", "group ", "分组 "},
    {"switch", "): faster", ")：更快"},
    {"switch", "): failure", ")：故障"},
    {"switch", "): manual", ")：手动"},
    {"switch", "): recovered", ")：已恢复"},
    {"switch", "): initial", ")：初始选择"},
    {"recovery", " recovered (", " 已恢复 ("},
    {"failure", " failed: ", " 检查失败："},
    {"failure", " rate-limited for ", " 被限流 "},
    {"info", " panic routing: no endpoint passes its checks", " 应急路由：没有端点通过检查"},
    {"info", "mode: manual, pinned to ", "模式：手动，固定到 "},
    {"info", "mode: auto", "模式：自动"},
    {"info", "configuration reloaded", "配置已重新加载"},
    {"info", ": check misconfigured: ", "：检查配置错误："},
};

static void event_text(const struct dv_view *v, const char *kind, const char *msg, char *out,
                       size_t outsz)
{
    snprintf(out, outsz, "%s", msg);
    if (v->lang != DV_LANG_ZH)
        return;
    for (size_t i = 0; i < sizeof ev_phrases / sizeof ev_phrases[0]; i++) {
        if (strcmp(kind, ev_phrases[i].kind) != 0)
            continue;
        char *at = strstr(out, ev_phrases[i].en);
        if (!at)
            continue;
        size_t en = strlen(ev_phrases[i].en), zh = strlen(ev_phrases[i].zh);
        size_t tail = strlen(at + en);
        if ((size_t)(at - out) + zh + tail + 1 > outsz)
            continue;
        memmove(at + zh, at + en, tail + 1);
        memcpy(at, ev_phrases[i].zh, zh);
    }
}

static void render_event_row(struct ctx *c, const cJSON *e)
{
    const struct dv_view *v = c->v;
    char when[32] = "--:--:--", text[1024];
    double t;
    if (jnum(e, "t", &t) && t > 0 && t < 1e15) {
        time_t secs = (time_t)(t / 1000);
        struct tm tm;
        if (localtime_r(&secs, &tm))
            strftime(when, sizeof when, "%H:%M:%S", &tm);
    }
    putf(c, DV_DIM, "  %s ", when);
    const char *kind = jstr(e, "kind") ? jstr(e, "kind") : "info";
    enum dv_text kt = T_EV_INFO;
    enum dv_style ks = DV_DIM;
    if (strcmp(kind, "switch") == 0)
        kt = T_EV_SWITCH, ks = DV_WARN;
    else if (strcmp(kind, "failure") == 0)
        kt = T_EV_FAILURE, ks = DV_BAD;
    else if (strcmp(kind, "recovery") == 0)
        kt = T_EV_RECOVERY, ks = DV_GOOD;
    put_fixed(c, ks, tr(v, kt), 9, false);
    event_text(v, kind, jstr(e, "message") ? jstr(e, "message") : "", text, sizeof text);
    put(c, DV_PLAIN, text);
}

/* "a b" from a third of the way down, wrapped over as many rows as it
 * needs. */
static void render_body_message(struct ctx *c, int top, int bottom, enum dv_style st, const char *a,
                                const char *b)
{
    char text[1024];
    snprintf(text, sizeof text, "%s%s%s", a, b ? " " : "", b ? b : "");
    int r = top + (bottom - top) / 3;
    const char *p = text;
    while (r < bottom && *p) {
        row(c, r++, DV_PLAIN);
        put(c, st, "  ");
        if (put_some(c->l, c->utf8, st, &p, c->s->cols - 4) == 0)
            break;
    }
}

static void render_help(struct ctx *c, int top, int bottom)
{
    const struct dv_view *v = c->v;
    static const struct {
        const char *keys;
        enum dv_text what;
    } items[] = {
        {"q  Q  Ctrl-C", T_H_QUIT},
        {"r", T_H_CHECK},
        {"p", T_H_PAUSE},
        {"m", T_H_MODE},
        {NULL, T_H_MOVE},
        {"Enter", T_H_PIN},
        {"g  Tab", T_H_GROUP},
        {"a", T_H_ALL},
        {"l", T_H_LOG},
        {"s", T_H_SESSIONS},
        {"x  X", T_H_RELEASE},
        {"?  Esc", T_H_HELP},
    };
    int r = top;
    if (r < bottom) {
        row(c, r++, DV_PLAIN);
        putf(c, DV_HEAD, " %s", tr(v, T_HELP_TITLE));
    }
    for (size_t i = 0; i < sizeof items / sizeof items[0] && r < bottom; i++) {
        row(c, r++, DV_PLAIN);
        put(c, DV_PLAIN, "   ");
        const char *keys = items[i].keys ? items[i].keys : c->utf8 ? "↑ ↓  j k" : "Up Down  j k";
        put_fixed(c, DV_STRONG, keys, 14, false);
        put(c, DV_PLAIN, tr(v, items[i].what));
    }
    if (r < bottom)
        row(c, r++, DV_PLAIN);
    if (r < bottom) {
        row(c, r++, DV_PLAIN);
        putf(c, DV_HEAD, " %s", tr(v, T_H_MARKS));
    }
    if (r < bottom) {
        row(c, r++, DV_PLAIN);
        put(c, DV_PLAIN, "   ");
        put(c, DV_GOOD, "*");
        putf(c, DV_PLAIN, " %s", tr(v, T_H_MARKS1));
    }
    if (r < bottom) {
        row(c, r++, DV_PLAIN);
        put(c, DV_PLAIN, "   ");
        putf(c, DV_GOOD, "%s %s", c->utf8 ? "●" : "+", tr(v, T_H_MARKS2));
        putf(c, DV_BAD, "  %s %s", c->utf8 ? "✗" : "x", tr(v, T_FAILED));
        putf(c, DV_WARN, "  %s %s", c->utf8 ? "◌" : "~", tr(v, T_EP_CHECKING));
        putf(c, DV_DIM, "  %s %s", c->utf8 ? "·" : "?", tr(v, T_UNKNOWN));
        putf(c, DV_BAD, "  ! %s", tr(v, T_AUTH_FAILED));
        putf(c, DV_WARN, "  ? %s", tr(v, T_CHECK_ERROR));
    }
    if (r < bottom) {
        row(c, r++, DV_PLAIN);
        putf(c, DV_PLAIN, "   %s", tr(v, T_H_SPARK));
    }
}

/* Starts row r of a pane over the columns x0..x1-1: the left pane starts
 * the row afresh, a right one continues it from x0.  render_body() puts
 * the rows' width back when the panes are done. */
static void pane_row(struct ctx *c, int r, int x0, int x1)
{
    if (x0 == 0) {
        row(c, r, DV_PLAIN);
    } else {
        c->l = &c->s->lines[r];
        pad_to(c, x0);
    }
    c->l->max = x1 < c->s->cols ? x1 : c->s->cols;
}

static void render_events(struct ctx *c, int r, int bottom, int x0, int x1)
{
    const struct dv_view *v = c->v;
    if (r >= bottom)
        return;
    pane_row(c, r++, x0, x1);
    putf(c, DV_HEAD, " %s", tr(v, T_EVENTS));
    const cJSON *evs = jarr(c->st, "events");
    if (cJSON_GetArraySize(evs) == 0 && r < bottom) {
        pane_row(c, r++, x0, x1);
        putf(c, DV_DIM, "  %s", tr(v, T_NO_EVENTS));
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, evs)
    {
        if (r >= bottom)
            break;
        pane_row(c, r++, x0, x1);
        render_event_row(c, e);
    }
}

static void render_log(struct ctx *c, int r, int bottom, int x0, int x1)
{
    const struct dv_view *v = c->v;
    if (r >= bottom)
        return;
    pane_row(c, r++, x0, x1);
    putf(c, DV_HEAD, " %s", tr(v, T_LOG));
    /* A --connect dashboard has no log of its own: say so, rather than
     * that there are no lines. */
    if (v->remote || v->n_log == 0) {
        if (r < bottom) {
            pane_row(c, r++, x0, x1);
            putf(c, DV_DIM, "  %s", tr(v, v->remote ? T_LOG_REMOTE : T_NO_LOG));
        }
        return;
    }
    int rows_left = bottom - r;
    size_t from = v->n_log > (size_t)rows_left ? v->n_log - (size_t)rows_left : 0;
    for (size_t i = from; i < v->n_log && r < bottom; i++) {
        pane_row(c, r++, x0, x1);
        put(c, DV_PLAIN, " ");
        put(c, DV_PLAIN, v->log[i] ? v->log[i] : "");
    }
}

/* The sessions view: where each session is bound, most recently used
 * first (short ids only: /status never shows a session id). */
static void render_sessions(struct ctx *c, int r, int bottom, int x0, int x1)
{
    const struct dv_view *v = c->v;
    const cJSON *so = jget(c->st, "sessions");
    if (r >= bottom)
        return;
    pane_row(c, r++, x0, x1);
    putf(c, DV_HEAD, " %s (%.0f)", tr(v, T_SESSIONS), jnum_or(so, "total", 0));
    double thr;
    if (jnum(so, "switch_threshold_ms", &thr) && thr >= 0 && thr < 1e9) {
        if (thr > 0)
            putf(c, DV_DIM, "  %s %.0f ms", tr(v, T_SESS_KEEP), thr);
    }
    if (so && !jtrue(so, "enabled")) {
        if (r < bottom) {
            pane_row(c, r++, x0, x1);
            putf(c, DV_DIM, "  %s", tr(v, T_SESS_OFF));
        }
        return;
    }
    const cJSON *list = jarr(so, "list");
    if (cJSON_GetArraySize(list) == 0) {
        if (r < bottom) {
            pane_row(c, r++, x0, x1);
            putf(c, DV_DIM, "  %s", tr(v, T_NO_SESSIONS));
        }
        return;
    }
    if (r < bottom) {
        pane_row(c, r++, x0, x1);
        putf(c, DV_DIM, "  %s", tr(v, T_SESS_COLS));
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, list)
    {
        if (r >= bottom)
            break;
        char age[32], idle[32], name[160];
        pane_row(c, r++, x0, x1);
        put(c, DV_PLAIN, "  ");
        put_fixed(c, DV_STRONG, jstr(x, "id") ? jstr(x, "id") : "?", 8, false);
        put(c, DV_PLAIN, "  ");
        if (v->all_groups && jstr(x, "group"))
            snprintf(name, sizeof name, "%s/%s", jstr(x, "group"),
                     jstr(x, "endpoint") ? jstr(x, "endpoint") : "?");
        else
            snprintf(name, sizeof name, "%s", jstr(x, "endpoint") ? jstr(x, "endpoint") : "?");
        put_name(c, DV_PLAIN, name, 18);
        put(c, DV_PLAIN, "  ");
        put_fixed(c, DV_DIM, dv_fmt_duration(age, sizeof age, jnum_or(x, "age_s", 0)), 6, true);
        put(c, DV_PLAIN, "  ");
        put_fixed(c, DV_DIM, dv_fmt_duration(idle, sizeof idle, jnum_or(x, "idle_s", 0)), 6, true);
    }
}

static void render_body(struct ctx *c, int top, int bottom)
{
    const struct dv_view *v = c->v;
    const cJSON *st = c->st;
    int avail = bottom - top;
    if (avail <= 0)
        return;

    /* Endpoints: header + rows, keeping two rows for each other section. */
    int total = dv_endpoint_count(st, v);
    int ep_rows = total > 0 ? total : 1;
    int cap = avail - 1 - 4;
    if (cap < 1)
        cap = 1;
    if (ep_rows > cap)
        ep_rows = cap;
    if (ep_rows > avail - 1)
        ep_rows = avail - 1;
    int cursor = clamp_cursor(st, v, v->cursor);
    int first = 0;
    if (total > ep_rows && cursor >= ep_rows)
        first = cursor - ep_rows + 1;
    int shown = ep_rows < total ? ep_rows : total;
    char label[192];
    ep_header_label(c, first, shown, total, label, sizeof label);
    struct ep_cols w = ep_layout(c, first, shown, text_width(label, c->utf8));
    int r = top;
    render_ep_header(c, r++, &w, first, shown, total);
    if (total == 0 && r < bottom) {
        row(c, r++, DV_PLAIN);
        putf(c, DV_DIM, "     %s", tr(v, T_NO_ENDPOINTS));
    }
    for (int i = 0; i < ep_rows && first + i < total && r < bottom; i++)
        render_ep_row(c, r++, &w, endpoint_at(st, v, first + i), first + i == cursor);

    /* Requests in flight, then events (or the log) below. */
    int rest = bottom - r;
    if (rest < 2)
        return;
    const cJSON *reqs = jarr(st, "requests");
    int nreq = cJSON_GetArraySize(reqs);
    int req_rows = nreq > 0 ? nreq : 1;
    int req_cap = rest - 1 - 2; /* its header, and the events' header + 1 */
    if (req_cap < 1)
        req_cap = 1;
    if (rest - 1 - 2 < 1)
        req_cap = rest - 1;
    int events_min = rest >= 8 ? (rest - 2) / 2 : 1;
    if (req_cap > rest - 2 - events_min && rest - 2 - events_min >= 1)
        req_cap = rest - 2 - events_min;
    if (req_rows > req_cap)
        req_rows = req_cap;
    row(c, r++, DV_PLAIN);
    putf(c, DV_HEAD, " %s (%d)", tr(v, T_ACTIVE_REQUESTS), nreq);
    int name_w = w.name < 16 ? w.name : 16;
    if (nreq == 0) {
        row(c, r++, DV_PLAIN);
        putf(c, DV_DIM, "  %s", tr(v, T_NO_REQUESTS));
    } else {
        const cJSON *q;
        int i = 0;
        cJSON_ArrayForEach(q, reqs)
        {
            if (r >= bottom)
                break;
            if (i == req_rows - 1 && nreq > req_rows) {
                row(c, r++, DV_PLAIN);
                putf(c, DV_DIM, "  +%d %s", nreq - i, tr(v, T_MORE));
                break;
            }
            render_request_row(c, r++, q, name_w);
            if (++i >= req_rows)
                break;
        }
    }
    if (bottom - r < 1)
        return;
    /* A wide screen has room for both: events on the left, the log on the
     * right (a --connect dashboard has no log to show). */
    int cols = c->s->cols;
    if (cols >= DV_SIDE_BY_SIDE_COLS && !v->remote) {
        int split = cols / 2;
        if (v->show_sessions)
            render_sessions(c, r, bottom, 0, split - 1);
        else
            render_events(c, r, bottom, 0, split - 1);
        render_log(c, r, bottom, split + 1, cols);
    } else if (v->show_sessions) {
        render_sessions(c, r, bottom, 0, cols);
    } else if (v->show_log) {
        render_log(c, r, bottom, 0, cols);
    } else {
        render_events(c, r, bottom, 0, cols);
    }
    for (int k = r; k < bottom; k++)
        c->s->lines[k].max = cols;
}

static void render_keys(struct ctx *c, int r)
{
    const struct dv_view *v = c->v;
    const cJSON *ch = jget(c->st, "checks");
    struct {
        const char *key;
        const char *what;
    } items[] = {
        {"q", tr(v, T_K_QUIT)},
        {"r", tr(v, T_K_CHECK)},
        {"p", tr(v, jtrue(ch, "paused") ? T_K_RESUME : T_K_PAUSE)},
        {"m", tr(v, T_K_MODE)},
        {c->utf8 ? "↑↓" : "Up/Dn", tr(v, T_K_MOVE)},
        {"Enter", tr(v, T_K_PIN)},
        {"g/Tab", tr(v, T_K_GROUP)},
        {"a", tr(v, T_K_ALL)},
        {"l", tr(v, T_K_LOG)},
        {"?", tr(v, T_K_HELP)},
        {"s", tr(v, T_K_SESSIONS)},
        {"x", tr(v, T_K_RELEASE)},
    };
    int n = (int)(sizeof items / sizeof items[0]);
    /* On a narrow screen the least needed keys go first, whole; "q" and
     * "?" (which lists them all) always stay. */
    static const int drop_order[] = {11, 10, 7, 8, 6, 4, 5, 3, 2, 1};
    bool keep[sizeof items / sizeof items[0]];
    int width = 1;
    for (int i = 0; i < n; i++) {
        keep[i] = true;
        width += text_width(items[i].key, c->utf8) + 1 + text_width(items[i].what, c->utf8) + 2;
    }
    for (size_t k = 0; k < sizeof drop_order / sizeof drop_order[0] && width > c->s->cols; k++) {
        int i = drop_order[k];
        keep[i] = false;
        width -= text_width(items[i].key, c->utf8) + 1 + text_width(items[i].what, c->utf8) + 2;
    }
    row(c, r, DV_KEYS);
    put(c, DV_KEYS, " ");
    for (int i = 0; i < n; i++) {
        if (!keep[i])
            continue;
        put(c, DV_STRONG, items[i].key);
        putf(c, DV_KEYS, " %s  ", items[i].what);
    }
}

void dv_render(struct dv_screen *s, const cJSON *status, const struct dv_view *v, uint64_t now_ms)
{
    struct ctx c = {
        .s = s,
        .v = v,
        .st = cJSON_IsObject(status) ? status : NULL,
        .now = now_ms,
        .utf8 = v->utf8,
    };
    for (int r = 0; r < s->rows; r++)
        line_reset(&s->lines[r], s->cols, DV_PLAIN);
    if (s->rows < 8 || s->cols < 30) {
        row(&c, 0, DV_PLAIN);
        putf(&c, DV_BAD, "%s (%dx%d)", tr(v, T_TOO_SMALL), s->cols, s->rows);
        if (s->rows > 1) {
            row(&c, s->rows - 1, DV_KEYS);
            putf(&c, DV_KEYS, "q %s", tr(v, T_K_QUIT));
        }
        return;
    }
    render_title(&c);
    int top = 1;
    if (c.st) {
        render_mode_line(&c);
        render_load_line(&c);
        top = 3;
    }
    int bottom = s->rows - 2;
    if (v->help)
        render_help(&c, top, bottom);
    else if (c.st)
        render_body(&c, top, bottom);
    else if (v->error)
        render_body_message(&c, top, bottom, DV_BAD, tr(v, T_CANNOT_REACH), v->error);
    else
        render_body_message(&c, top, bottom, DV_DIM, tr(v, T_WAITING_STATUS), NULL);

    row(&c, s->rows - 2, DV_PLAIN);
    if (v->quitting)
        putf(&c, DV_WARN, " %s", tr(v, T_QUITTING));
    else if (v->error && c.st)
        putf(&c, DV_BAD, " %s %s", tr(v, T_CANNOT_REACH), v->error);
    else if (v->msg[0])
        putf(&c, v->msg_bad ? DV_BAD : DV_PLAIN, " %s", v->msg);
    render_keys(&c, s->rows - 1);
}

/* ---- keys ------------------------------------------------------------------- */

static void action_admin(struct dv_action *a, const char *op, cJSON *body, const char *what)
{
    a->kind = DV_ACT_ADMIN;
    snprintf(a->op, sizeof a->op, "%s", op);
    a->body = body;
    snprintf(a->what, sizeof a->what, "%s", what);
}

static enum dv_act say(struct dv_view *v, struct dv_action *a, bool bad, const char *msg)
{
    snprintf(v->msg, sizeof v->msg, "%s", msg);
    v->msg_bad = bad;
    a->kind = DV_ACT_REDRAW;
    return a->kind;
}

enum dv_act dv_handle_key(struct dv_view *v, const cJSON *status, int key, struct dv_action *a)
{
    const cJSON *st = cJSON_IsObject(status) ? status : NULL;
    char what[160];
    memset(a, 0, sizeof *a);
    a->kind = DV_ACT_NONE;

    if (key == 'q' || key == 'Q' || key == 3) {
        a->kind = DV_ACT_QUIT;
        return a->kind;
    }
    if (v->help) {
        v->help = false;
        if (key == '?' || key == 27) {
            a->kind = DV_ACT_REDRAW;
            return a->kind;
        }
    }
    switch (key) {
    case '?':
    case 'h':
        v->help = true;
        a->kind = DV_ACT_REDRAW;
        return a->kind;
    case 'r':
    case 'R': action_admin(a, "check", NULL, tr(v, T_DO_CHECK)); return a->kind;
    case 'l':
    case 'L':
        v->show_log = !v->show_log;
        if (v->show_log)
            v->show_sessions = false;
        a->kind = DV_ACT_REDRAW;
        return a->kind;
    case 's':
    case 'S':
        v->show_sessions = !v->show_sessions;
        if (v->show_sessions)
            v->show_log = false;
        a->kind = DV_ACT_REDRAW;
        return a->kind;
    default: break;
    }
    if (!st) {
        if (key == 27)
            return a->kind;
        return say(v, a, true, tr(v, T_NO_STATUS));
    }
    int n = dv_endpoint_count(st, v);
    int cursor = clamp_cursor(st, v, v->cursor);
    switch (key) {
    case 'p':
    case 'P': {
        bool paused = jtrue(jget(st, "checks"), "paused");
        action_admin(a, paused ? "resume" : "pause", NULL,
                     tr(v, paused ? T_DO_RESUME : T_DO_PAUSE));
        return a->kind;
    }
    case 'm':
    case 'M': {
        bool manual = jstr(st, "mode") && strcmp(jstr(st, "mode"), "manual") == 0;
        cJSON *body = cJSON_CreateObject();
        cJSON_AddStringToObject(body, "mode", manual ? "auto" : "manual");
        snprintf(what, sizeof what, "%s: %s", tr(v, T_DO_MODE), tr(v, manual ? T_AUTO : T_MANUAL));
        action_admin(a, "mode", body, what);
        return a->kind;
    }
    case DV_KEY_UP:
    case 'k':
    case DV_KEY_DOWN:
    case 'j':
    case DV_KEY_PGUP:
    case DV_KEY_PGDN:
    case DV_KEY_HOME:
    case DV_KEY_END: {
        int to = cursor;
        if (key == DV_KEY_UP || key == 'k')
            to--;
        else if (key == DV_KEY_DOWN || key == 'j')
            to++;
        else if (key == DV_KEY_PGUP)
            to -= 10;
        else if (key == DV_KEY_PGDN)
            to += 10;
        else if (key == DV_KEY_HOME)
            to = 0;
        else
            to = n - 1;
        v->cursor = clamp_cursor(st, v, to);
        a->kind = DV_ACT_REDRAW;
        return a->kind;
    }
    case DV_KEY_ENTER:
    case '\n':
    case '\r': {
        const char *name = dv_endpoint_name(st, v, cursor);
        if (!name)
            return say(v, a, true, tr(v, T_NOTHING_TO_PIN));
        cJSON *body = cJSON_CreateObject();
        cJSON_AddStringToObject(body, "endpoint", name);
        snprintf(what, sizeof what, "%s %s", tr(v, T_DO_PIN), name);
        action_admin(a, "pin", body, what);
        return a->kind;
    }
    case 'g':
    case 'G':
    case '\t': {
        const cJSON *groups = jarr(st, "groups");
        int ng = cJSON_GetArraySize(groups);
        const char *cg = current_group(st);
        int cur = -1;
        for (int i = 0; i < ng; i++) {
            const char *gn = jstr(cJSON_GetArrayItem(groups, i), "name");
            if (gn && cg && strcmp(gn, cg) == 0)
                cur = i;
        }
        const char *next = ng > 1 ? jstr(cJSON_GetArrayItem(groups, (cur + 1) % ng), "name") : NULL;
        if (!next)
            return say(v, a, false, tr(v, T_ONE_GROUP));
        cJSON *body = cJSON_CreateObject();
        cJSON_AddStringToObject(body, "group", next);
        snprintf(what, sizeof what, "%s: %s", tr(v, T_DO_GROUP), next);
        action_admin(a, "group", body, what);
        /* The cursor finds its place again on the next frame. */
        if (!v->all_groups)
            v->cursor = -1;
        return a->kind;
    }
    case 'x': {
        const char *name = dv_endpoint_name(st, v, cursor);
        if (!name)
            return say(v, a, true, tr(v, T_NOTHING_TO_PIN));
        cJSON *body = cJSON_CreateObject();
        cJSON_AddStringToObject(body, "endpoint", name);
        snprintf(what, sizeof what, "%s %s", tr(v, T_DO_RELEASE), name);
        action_admin(a, "sessions/release", body, what);
        return a->kind;
    }
    case 'X':
        action_admin(a, "sessions/release", cJSON_CreateObject(), tr(v, T_DO_RELEASE_ALL));
        return a->kind;
    case 'a':
    case 'A': {
        const char *name = dv_endpoint_name(st, v, cursor);
        v->all_groups = !v->all_groups;
        int i = endpoint_index(st, v, name);
        v->cursor = i >= 0 ? i : 0;
        a->kind = DV_ACT_REDRAW;
        return a->kind;
    }
    case 27:
        if (v->msg[0]) {
            v->msg[0] = '\0';
            a->kind = DV_ACT_REDRAW;
        }
        return a->kind;
    default: return a->kind;
    }
}

void dv_action_release(struct dv_action *a)
{
    cJSON_Delete(a->body);
    a->body = NULL;
}
