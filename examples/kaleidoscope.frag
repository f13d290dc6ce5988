// Kaleidoscope: a Shadertoy shader, pasted as it is (mainImage and its uniforms).
// framefarm render examples/kaleidoscope.frag -o kaleidoscope.mp4 --frames 240
void mainImage(out vec4 fragColor, in vec2 fragCoord)
{
    vec2 uv = (2.0 * fragCoord - iResolution.xy) / iResolution.y;
    float a = atan(uv.y, uv.x);
    float r = length(uv);
    float k = 6.0;
    a = mod(a, 6.2831853 / k);
    a = abs(a - 3.14159265 / k);
    vec2 p = r * vec2(cos(a), sin(a));
    float t = iTime * 0.5;
    vec3 col = 0.5 + 0.5 * cos(t + vec3(0.0, 2.0, 4.0) + 6.0 * p.xyx + 3.0 * r);
    col *= smoothstep(1.4, 0.2, r);
    fragColor = vec4(col, 1.0);
}
