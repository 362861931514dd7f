# The web handler's _w_first (connectors.web.common).
# shellcheck shell=sh
# What a failed config test or reload said, in one line of at most 300 characters: the lines that name
# the cause, i.e. nginx's "[emerg]" / "[alert]" / "[crit]" / "[error]" lines (a reload's first line is
# "[notice] signal process started", the cause comes after it) and apache's error-log levels and
# "Syntax error on line N of FILE:" (joined with the line after it), up to three joined by " / ";
# without any, the last non-empty line that is not apache's boilerplate ("Action '...' failed.").
_w_first() {
  awk 'function keep(s) { if (n < 3) { out = out (n ? " / " : "") s; n++ } }
    { sub(/\r$/, "") } NF == 0 { next }
    join != "" { keep(join " " $0); join = ""; next }
    /\[([a-z_]+:)?(emerg|alert|crit|error)\]/ || /Syntax error on line/ { if ($0 ~ /:$/) { join = $0; next } keep($0); next }
    { any = $0 }
    !/^Action .* failed\.$/ && !/^The Apache error log may have more information\.$/ { last = $0 }
    END { if (join != "") keep(join); if (n) print out; else if (last != "") print last;
      else if (any != "") print any; else print "no output" }' "$_ar_tmp/web.out" | cut -c1-300
}
